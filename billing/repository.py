"""The SQL of the billing domain's accounts, movements and grant expiry.

The statements of holds (a swap's Tokens held, captured, released, refunded) are in
``billing/hold_repository.py``, bulk recharge's in ``billing/bulk_repository.py``, the
ledger check's in ``billing/verify.py``.

Each money movement is ONE statement: a data-modifying CTE that locks the user account,
writes the ledger entry (``ON CONFLICT DO NOTHING`` on its idempotency key, so a replay
writes nothing) and moves the balance only when the entry was written. Postgres re-reads
a row locked with ``FOR UPDATE`` at its newest committed version, so the checks
(``status = 'active'``, ``balance - held >= n``) see the truth even under contention.

Lock order, everywhere: a hold row (when the operation names one), then user accounts in
id order, then at most one system account of the tenant. Two statements can therefore
never wait on each other in a cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

ENTRY_COLUMNS = (
    "tenant_id, from_account_id, to_account_id, amount, kind, reference, operator, reason,"
    " idempotency_key, hold_id, balance_after, held_after"
)
ON_KEY_CONFLICT = (
    "ON CONFLICT (tenant_id, kind, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
)

# ---------------------------------------------------------------------------------------
# Accounts
# ---------------------------------------------------------------------------------------

_OPEN_TENANT_ACCOUNTS = text(
    """
    INSERT INTO accounts (tenant_id, kind)
    VALUES (:tenant_id, 'issuance'), (:tenant_id, 'revenue')
    ON CONFLICT (tenant_id, kind) WHERE kind <> 'user' DO NOTHING
    """
)

_OPEN_USER_ACCOUNTS = text(
    """
    INSERT INTO accounts (tenant_id, user_id, kind)
    SELECT :tenant_id, u.id, 'user'
    FROM unnest(CAST(:user_ids AS bigint[])) AS x(user_id)
    JOIN users u ON u.id = x.user_id AND u.tenant_id = :tenant_id
    ORDER BY u.id
    ON CONFLICT (user_id) DO NOTHING
    """
)

_SET_STATUS = text(
    """
    UPDATE accounts
    SET status = :status, frozen_reason = :reason, updated_at = now()
    WHERE tenant_id = :tenant_id AND user_id = :user_id AND kind = 'user'
    RETURNING id
    """
)

_ACCOUNT_VIEW = text(
    "SELECT id, tenant_id, balance, held, status FROM accounts WHERE user_id = :user_id"
)


# What is left of each grant lot, grouped by when it expires and its campaign, soonest first.
_EXPIRING = text(
    """
    SELECT sum(remaining) AS amount, expires_at, label FROM token_grants
    WHERE account_id = :account_id AND status = 'active' AND remaining > 0
    GROUP BY expires_at, label
    ORDER BY expires_at, label NULLS FIRST
    """
)


async def open_tenant_accounts(session: AsyncSession, tenant_id: uuid.UUID) -> None:
    await session.execute(_OPEN_TENANT_ACCOUNTS, {"tenant_id": tenant_id})


async def open_user_accounts(
    session: AsyncSession, tenant_id: uuid.UUID, user_ids: Sequence[int]
) -> None:
    await session.execute(
        _OPEN_USER_ACCOUNTS, {"tenant_id": tenant_id, "user_ids": sorted(set(user_ids))}
    )


async def set_account_status(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: int, status: str, reason: str | None
) -> bool:
    result = await session.execute(
        _SET_STATUS,
        {"tenant_id": tenant_id, "user_id": user_id, "status": status, "reason": reason},
    )
    return result.first() is not None


async def account_of_user(session: AsyncSession, user_id: int) -> Row[Any] | None:
    return (await session.execute(_ACCOUNT_VIEW, {"user_id": user_id})).first()


async def expiring_lots(session: AsyncSession, account_id: int) -> list[Row[Any]]:
    return list((await session.execute(_EXPIRING, {"account_id": account_id})).all())


# ---------------------------------------------------------------------------------------
# Single-account movements between a user and a system account
# ---------------------------------------------------------------------------------------

_USER_ACCOUNT_LOCKED = """
    acc AS (
        SELECT id, balance, held, status FROM accounts
        WHERE tenant_id = :tenant_id AND user_id = :user_id AND kind = 'user'
        FOR UPDATE
    ),
    sys AS (SELECT id FROM accounts WHERE tenant_id = :tenant_id AND kind = :system_kind)
"""

# Tokens from the tenant's system account (issuance) to the user: recharge, grant, +adjustment.
_CREDIT_USER = f"""
    WITH {_USER_ACCOUNT_LOCKED},
    entry AS (
        INSERT INTO ledger_entries ({ENTRY_COLUMNS})
        SELECT :tenant_id, sys.id, acc.id, :amount, :kind, :reference, :operator, :reason,
               :idempotency_key, NULL, acc.balance + :amount, acc.held
        FROM acc, sys
        WHERE acc.status = 'active'
        {ON_KEY_CONFLICT}
        RETURNING id, to_account_id, amount, balance_after, held_after, created_at
    ),
    {{extra}}
    credited AS (
        UPDATE accounts a SET balance = a.balance + e.amount, updated_at = now()
        FROM entry e WHERE a.id = e.to_account_id
        RETURNING a.id
    ),
    debited AS (
        UPDATE accounts a SET balance = a.balance - e.amount, updated_at = now()
        FROM entry e, sys, credited WHERE a.id = sys.id
        RETURNING a.id
    )
    SELECT acc.id AS account_id, acc.status, acc.balance - acc.held AS available,
           (SELECT id FROM sys) AS system_account_id,
           e.id AS entry_id, e.balance_after, e.held_after, e.created_at,
           (SELECT count(*) FROM debited) AS system_moved
    FROM acc LEFT JOIN entry e ON true
"""
CREDIT_USER = text(_CREDIT_USER.replace("{extra}", ""))
GRANT_WITH_EXPIRY = text(
    _CREDIT_USER.replace(
        "{extra}",
        """
    lot AS (
        INSERT INTO token_grants (tenant_id, account_id, entry_id, amount, remaining,
                                  expires_at, label)
        SELECT :tenant_id, e.to_account_id, e.id, e.amount, e.amount,
               CAST(:expires_at AS timestamptz), CAST(:label AS varchar)
        FROM entry e
        RETURNING id
    ),
        """,
    )
)

# Tokens from the user back to the tenant's issuance account: -adjustment.
DEBIT_USER = text(
    f"""
    WITH {_USER_ACCOUNT_LOCKED},
    entry AS (
        INSERT INTO ledger_entries ({ENTRY_COLUMNS})
        SELECT :tenant_id, acc.id, sys.id, :amount, :kind, :reference, :operator, :reason,
               :idempotency_key, NULL, acc.balance - :amount, acc.held
        FROM acc, sys
        WHERE acc.status = 'active' AND acc.balance - acc.held >= :amount
        {ON_KEY_CONFLICT}
        RETURNING id, from_account_id, amount, balance_after, held_after, created_at
    ),
    debited AS (
        UPDATE accounts a SET balance = a.balance - e.amount, updated_at = now()
        FROM entry e WHERE a.id = e.from_account_id
        RETURNING a.id
    ),
    credited AS (
        UPDATE accounts a SET balance = a.balance + e.amount, updated_at = now()
        FROM entry e, sys, debited WHERE a.id = sys.id
        RETURNING a.id
    )
    SELECT acc.id AS account_id, acc.status, acc.balance - acc.held AS available,
           (SELECT id FROM sys) AS system_account_id,
           e.id AS entry_id, e.balance_after, e.held_after, e.created_at,
           (SELECT count(*) FROM credited) AS system_moved
    FROM acc LEFT JOIN entry e ON true
    """
)

ENTRY_BY_KEY = text(
    """
    SELECT id, from_account_id, to_account_id, amount, kind, reference, hold_id,
           balance_after, held_after, created_at
    FROM ledger_entries
    WHERE tenant_id = :tenant_id AND kind = :kind AND idempotency_key = :idempotency_key
    """
)

# Spending consumes unspent grant tokens, soonest-expiring first (see service docstring).
# A separate statement on purpose: it must run after the account lock is held so that its
# snapshot sees every earlier spend of this account.
CONSUME_GRANTS = text(
    """
    UPDATE token_grants g SET remaining = GREATEST(0, s.cum - :amount)
    FROM (
        SELECT id, remaining, sum(remaining) OVER (ORDER BY expires_at, id) AS cum
        FROM token_grants
        WHERE account_id = :account_id AND status = 'active' AND remaining > 0
    ) s
    WHERE g.id = s.id AND s.cum - s.remaining < :amount
    """
)

# ---------------------------------------------------------------------------------------
# Grant expiry (set-based; one runner at a time, see service.expire_grants)
# ---------------------------------------------------------------------------------------

EXPIRY_LOCK = text("SELECT pg_try_advisory_xact_lock(73217002)")

# What follows ``locked`` (the accounts, locked in id order) and ``due`` (their due lots,
# locked): what each account gives back, its ``expire`` entries, the lots closed. Shared
# with the daily refill (billing/refill_repository.py), which expires the old daily grant.
EXPIRE_DUE_LOTS = """
    take AS (
        -- Held Tokens are not taken: the job that holds them may still capture them, and
        -- a capture spends the soonest-expiring lots first, so the hold covers the due
        -- lots before any bought Tokens. What is taken is the due Tokens beyond the
        -- holds (so the outcome is the same whether the capture comes before this pass or
        -- after); the covered rest stays in its lots, for a later pass to take once the
        -- hold is released, or for the capture to spend.
        SELECT l.id AS account_id, l.tenant_id, l.balance, l.held,
               sum(d.remaining) AS due,
               LEAST(GREATEST(0, sum(d.remaining) - l.held), l.balance - l.held) AS take
        FROM locked l JOIN due d ON d.account_id = l.id
        GROUP BY l.id, l.tenant_id, l.balance, l.held
    ),
    shares AS (
        -- The first (due - take) Tokens in spending order are covered; each lot gives what
        -- it holds past that point.
        SELECT d.id AS grant_id, d.account_id, t.tenant_id, t.held, d.expired_amount,
               LEAST(d.remaining, GREATEST(0, sum(d.remaining) OVER w - (t.due - t.take)))
                   AS share,
               t.balance - GREATEST(0, sum(d.remaining) OVER w - (t.due - t.take))
                   AS balance_after
        FROM due d JOIN take t ON t.account_id = d.account_id
        WINDOW w AS (PARTITION BY d.account_id ORDER BY d.expires_at, d.id)
    ),
    debited AS (
        UPDATE accounts a SET balance = a.balance - t.take, updated_at = now()
        FROM take t WHERE a.id = t.account_id AND t.take > 0
        RETURNING a.id
    ),
    per_tenant AS (
        SELECT t.tenant_id, sum(t.take) AS total FROM take t GROUP BY t.tenant_id
    ),
    credited AS (
        UPDATE accounts a SET balance = a.balance + p.total, updated_at = now()
        FROM per_tenant p WHERE a.tenant_id = p.tenant_id AND a.kind = 'issuance' AND p.total > 0
        RETURNING a.id
    ),
    entries AS (
        INSERT INTO ledger_entries (tenant_id, from_account_id, to_account_id, amount, kind,
                                    reference, operator, reason, idempotency_key,
                                    balance_after, held_after)
        SELECT s.tenant_id, s.account_id, sys.id, s.share, 'expire', 'grant:' || s.grant_id,
               'system', 'granted tokens expired',
               -- a lot may expire in parts (see take): keyed by its expired total so far
               'grant:' || s.grant_id || ':' || (s.expired_amount + s.share),
               s.balance_after, s.held
        FROM shares s JOIN accounts sys ON sys.tenant_id = s.tenant_id AND sys.kind = 'issuance'
        WHERE s.share > 0
        ORDER BY s.account_id, s.balance_after DESC
        RETURNING tenant_id, amount
    ),
    closed AS (
        UPDATE token_grants g
        SET remaining = g.remaining - s.share, expired_amount = g.expired_amount + s.share,
            status = CASE WHEN g.remaining = s.share THEN 'expired' ELSE 'active' END
        FROM shares s WHERE g.id = s.grant_id AND (s.share > 0 OR g.remaining = 0)
        RETURNING g.id
    )
"""

EXPIRE_GRANTS = text(
    """
    WITH due_accounts AS (
        -- Accounts with something to take back, or a spent lot to close. (Not re-checked
        -- here: ``take`` is computed under the lock. An account whose due Tokens are all
        -- held waits for a later pass, without filling this one's batch.)
        SELECT g.account_id FROM token_grants g JOIN accounts a ON a.id = g.account_id
        WHERE g.status = 'active' AND g.expires_at <= :now
        GROUP BY g.account_id, a.balance, a.held
        HAVING (sum(g.remaining) > a.held AND a.balance > a.held) OR bool_or(g.remaining = 0)
        ORDER BY g.account_id
        LIMIT :limit
    ),
    locked AS (
        SELECT a.id, a.tenant_id, a.balance, a.held FROM accounts a
        WHERE a.id IN (SELECT account_id FROM due_accounts)
        ORDER BY a.id
        FOR UPDATE OF a
    ),
    due AS (
        SELECT g.id, g.account_id, g.remaining, g.expired_amount, g.expires_at
        FROM token_grants g JOIN locked l ON l.id = g.account_id
        WHERE g.status = 'active' AND g.expires_at <= :now
        FOR UPDATE OF g
    ),
"""
    + EXPIRE_DUE_LOTS
    + """
    SELECT (SELECT count(*) FROM closed) AS grants,
           (SELECT count(*) FROM credited) AS tenants,
           (SELECT coalesce(json_agg(json_build_array(x.tenant_id, x.amount)), '[]')
              FROM (SELECT tenant_id, sum(amount) AS amount FROM entries GROUP BY tenant_id) x)
               AS moved
    """
)

# ---------------------------------------------------------------------------------------
# End-user reads
# ---------------------------------------------------------------------------------------

USER_LEDGER_PAGE = text(
    """
    SELECT id, created_at, kind, amount, from_account_id, to_account_id, balance_after,
           held_after, reference
    FROM (
        (SELECT * FROM ledger_entries
         WHERE to_account_id = :account_id AND id < :before
         ORDER BY id DESC LIMIT :limit)
        UNION ALL
        (SELECT * FROM ledger_entries
         WHERE from_account_id = :account_id AND to_account_id <> :account_id AND id < :before
         ORDER BY id DESC LIMIT :limit)
    ) page
    ORDER BY id DESC
    LIMIT :limit
    """
)


async def user_ledger_page(
    session: AsyncSession, account_id: int, before: int, limit: int
) -> list[Row[Any]]:
    result = await session.execute(
        USER_LEDGER_PAGE, {"account_id": account_id, "before": before, "limit": limit}
    )
    return list(result.all())


async def run(session: AsyncSession, statement: Any, params: dict[str, Any]) -> Row[Any] | None:
    """Execute one statement and return its first row."""
    return (await session.execute(statement, params)).first()
