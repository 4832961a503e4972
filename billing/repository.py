"""Every SQL statement of the billing domain.

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

_ENTRY_COLUMNS = (
    "tenant_id, from_account_id, to_account_id, amount, kind, reference, operator, reason,"
    " idempotency_key, hold_id, balance_after, held_after"
)
_ON_KEY_CONFLICT = (
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
        INSERT INTO ledger_entries ({_ENTRY_COLUMNS})
        SELECT :tenant_id, sys.id, acc.id, :amount, :kind, :reference, :operator, :reason,
               :idempotency_key, NULL, acc.balance + :amount, acc.held
        FROM acc, sys
        WHERE acc.status = 'active'
        {_ON_KEY_CONFLICT}
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
        INSERT INTO token_grants (tenant_id, account_id, entry_id, amount, remaining, expires_at)
        SELECT :tenant_id, e.to_account_id, e.id, e.amount, e.amount,
               CAST(:expires_at AS timestamptz)
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
        INSERT INTO ledger_entries ({_ENTRY_COLUMNS})
        SELECT :tenant_id, acc.id, sys.id, :amount, :kind, :reference, :operator, :reason,
               :idempotency_key, NULL, acc.balance - :amount, acc.held
        FROM acc, sys
        WHERE acc.status = 'active' AND acc.balance - acc.held >= :amount
        {_ON_KEY_CONFLICT}
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
# Holds
# ---------------------------------------------------------------------------------------

# A hold as the service shows it (HoldView): CAPTURE and RELEASE return it from their own
# rows, HOLD_BY_REFERENCE reads it. ``h`` is the hold, ``acc`` its account after the call.
_HOLD_VIEW = (
    "h.id, h.reference, h.account_id, h.amount, h.captured, h.released, h.refunded,"
    " h.status, h.price_version, acc.balance, acc.held"
)


def hold_ctes(gate: str = "true") -> str:
    """The CTEs of a hold, ``acc`` (the user account, locked), ``h`` (the hold, when made),
    ``entry`` and ``upd``, for a statement that also writes what the hold is for (a job:
    ``app.jobs.repository``). The hold is made only when ``gate`` (SQL over the statement's
    own CTEs) is true, the account is active and ``:amount`` is available.

    Parameters: ``:tenant_id``, ``:user_id``, ``:reference``, ``:amount``,
    ``:price_version``, ``:operator``.
    """
    return f"""
    acc AS (
        SELECT id, balance, held, status FROM accounts
        WHERE tenant_id = :tenant_id AND user_id = :user_id AND kind = 'user'
        FOR UPDATE
    ),
    h AS (
        INSERT INTO holds (tenant_id, account_id, reference, amount, price_version)
        SELECT :tenant_id, acc.id, :reference, :amount, :price_version FROM acc
        WHERE acc.status = 'active' AND acc.balance - acc.held >= :amount AND ({gate})
        ON CONFLICT (tenant_id, reference) DO NOTHING
        RETURNING id, account_id, amount
    ),
    entry AS (
        INSERT INTO ledger_entries ({_ENTRY_COLUMNS})
        SELECT :tenant_id, h.account_id, h.account_id, h.amount, 'hold', :reference, :operator,
               NULL, :reference, h.id, acc.balance, acc.held + h.amount
        FROM h, acc
        RETURNING id
    ),
    upd AS (
        UPDATE accounts a SET held = a.held + h.amount, updated_at = now()
        FROM h WHERE a.id = h.account_id
        RETURNING a.balance, a.held
    )"""


# What a hold statement answers (``hold_ctes`` then this): whether the hold was made
# (hold_id), and if not why (the account's status and what it had available).
HOLD_OUTCOME = (
    "acc.id AS account_id, acc.status AS account_status, acc.balance - acc.held AS available,"
    " h.id AS hold_id, upd.balance, upd.held"
)

HOLD = text(
    f"""
    WITH {hold_ctes()}
    SELECT {HOLD_OUTCOME}
    FROM acc LEFT JOIN h ON true LEFT JOIN upd ON true
    """
)


def capture_ctes(gate: str = "true") -> str:
    """The CTEs of a capture, ``h`` (the hold, settled), ``acc`` (its account), ``rev``,
    ``entries`` and ``earned``, for a statement that also records why (a finished job:
    ``app.jobs.repository``). Only a hold still held, of at least ``:amount``, and only
    when ``gate`` (SQL over the statement's own CTEs) is true. ``:amount`` 0 releases the
    whole hold; the release entry carries ``:reason``.

    Parameters: ``:tenant_id``, ``:reference``, ``:amount``, ``:operator``, ``:reason``.
    """
    return f"""
    h AS (
        UPDATE holds
        SET status = CASE WHEN :amount = 0 THEN 'released' ELSE 'captured' END,
            captured = :amount, released = amount - :amount, settled_at = now()
        WHERE tenant_id = :tenant_id AND reference = :reference AND status = 'held'
          AND amount >= :amount AND ({gate})
        RETURNING id, account_id, reference, amount, captured, released, refunded, status,
                  price_version
    ),
    acc AS (
        UPDATE accounts a
        SET balance = a.balance - h.captured, held = a.held - h.amount, updated_at = now()
        FROM h WHERE a.id = h.account_id
        RETURNING a.id, a.balance, a.held
    ),
    rev AS (SELECT id FROM accounts WHERE tenant_id = :tenant_id AND kind = 'revenue'),
    entries AS (
        INSERT INTO ledger_entries ({_ENTRY_COLUMNS})
        SELECT :tenant_id, acc.id,
               CASE WHEN x.kind = 'capture' THEN rev.id ELSE acc.id END,
               x.amount, x.kind, :reference, :operator,
               CASE WHEN x.kind = 'release' THEN CAST(:reason AS text) END,
               :reference, h.id, acc.balance,
               CASE WHEN x.kind = 'capture' THEN acc.held + h.released ELSE acc.held END
        FROM h, acc, rev,
             LATERAL (VALUES (1, 'capture', h.captured), (2, 'release', h.released))
                 AS x(ord, kind, amount)
        WHERE x.amount > 0
        ORDER BY x.ord
        RETURNING id
    ),
    earned AS (
        UPDATE accounts a SET balance = a.balance + h.captured, updated_at = now()
        FROM h, acc, rev WHERE a.id = rev.id AND h.captured > 0
        RETURNING a.id
    )"""


CAPTURE = text(
    f"""
    WITH {capture_ctes()}
    SELECT {_HOLD_VIEW} FROM h JOIN acc ON true
    """
)

RELEASE = text(
    f"""
    WITH h AS (
        UPDATE holds SET status = 'released', released = amount, settled_at = now()
        WHERE tenant_id = :tenant_id AND reference = :reference AND status = 'held'
        RETURNING id, account_id, reference, amount, captured, released, refunded, status,
                  price_version
    ),
    acc AS (
        UPDATE accounts a SET held = a.held - h.amount, updated_at = now()
        FROM h WHERE a.id = h.account_id
        RETURNING a.id, a.balance, a.held
    ),
    entry AS (
        INSERT INTO ledger_entries ({_ENTRY_COLUMNS})
        SELECT :tenant_id, acc.id, acc.id, h.amount, 'release', :reference, :operator, :reason,
               :reference, h.id, acc.balance, acc.held
        FROM h, acc
        RETURNING id
    )
    SELECT {_HOLD_VIEW} FROM h JOIN acc ON true
    """
)

REFUND = text(
    f"""
    WITH h AS (
        SELECT id, account_id, captured, refunded FROM holds
        WHERE tenant_id = :tenant_id AND reference = :reference AND status = 'captured'
        FOR UPDATE
    ),
    acc AS (
        SELECT a.id, a.balance, a.held FROM accounts a JOIN h ON a.id = h.account_id
        FOR UPDATE OF a
    ),
    rev AS (SELECT id FROM accounts WHERE tenant_id = :tenant_id AND kind = 'revenue'),
    entry AS (
        INSERT INTO ledger_entries ({_ENTRY_COLUMNS})
        SELECT :tenant_id, rev.id, acc.id, :amount, 'refund', :reference, :operator, :reason,
               :idempotency_key, h.id, acc.balance + :amount, acc.held
        FROM h, acc, rev
        WHERE h.refunded + :amount <= h.captured
        {_ON_KEY_CONFLICT}
        RETURNING id, hold_id, to_account_id, amount, balance_after, held_after, created_at
    ),
    refunded AS (
        UPDATE holds SET refunded = holds.refunded + e.amount
        FROM entry e WHERE holds.id = e.hold_id
        RETURNING holds.refunded
    ),
    credited AS (
        UPDATE accounts a SET balance = a.balance + e.amount, updated_at = now()
        FROM entry e WHERE a.id = e.to_account_id
        RETURNING a.id
    ),
    debited AS (
        UPDATE accounts a SET balance = a.balance - e.amount, updated_at = now()
        FROM entry e, rev, credited WHERE a.id = rev.id
        RETURNING a.id
    )
    SELECT h.id AS hold_id, h.captured, h.refunded AS refunded_before, acc.id AS account_id,
           e.id AS entry_id, e.balance_after, e.held_after, e.created_at,
           (SELECT count(*) FROM refunded) AS hold_updated
    FROM h JOIN acc ON true LEFT JOIN entry e ON true
    """
)

HOLD_BY_REFERENCE = text(
    f"""
    SELECT {_HOLD_VIEW} FROM holds h JOIN accounts acc ON acc.id = h.account_id
    WHERE h.tenant_id = :tenant_id AND h.reference = :reference
    """
)

# ---------------------------------------------------------------------------------------
# Grant expiry (set-based; one runner at a time, see service.expire_grants)
# ---------------------------------------------------------------------------------------

EXPIRY_LOCK = text("SELECT pg_try_advisory_xact_lock(73217002)")

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
        SELECT s.tenant_id, s.account_id, sys.id, s.share, 'expiry', 'grant:' || s.grant_id,
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
    SELECT (SELECT count(*) FROM closed) AS grants,
           (SELECT count(*) FROM credited) AS tenants,
           (SELECT coalesce(json_agg(json_build_array(x.tenant_id, x.amount)), '[]')
              FROM (SELECT tenant_id, sum(amount) AS amount FROM entries GROUP BY tenant_id) x)
               AS moved
    """
)

# ---------------------------------------------------------------------------------------
# Bulk recharge
# ---------------------------------------------------------------------------------------

TENANT_FOR_BATCH = text("SELECT id, approval_threshold FROM tenants WHERE id = :tenant_id")

SYSTEM_ACCOUNT = text("SELECT id FROM accounts WHERE tenant_id = :tenant_id AND kind = :kind")

# The two statements that touch every entry of a batch run on the asyncpg connection under
# the session (same transaction): asyncpg hands 10,000 rows back several times faster than
# SQLAlchemy's result layer, which showed in the bulk-recharge profile.

# Resolve external ids to accounts and lock those accounts in id order, in one round trip.
RESOLVE_ACCOUNTS = """
    SELECT x.external_id, a.id AS account_id, a.status
    FROM unnest($1::text[]) AS x(external_id)
    JOIN users u ON u.tenant_id = $2 AND u.external_id = x.external_id
    JOIN accounts a ON a.user_id = u.id
    ORDER BY a.id
"""
RESOLVE_AND_LOCK = RESOLVE_ACCOUNTS + "    FOR UPDATE OF a\n"

# Users of the tenant that exist but have no account yet (imported before billing existed).
USERS_WITHOUT_ACCOUNT = text(
    """
    SELECT u.id, u.external_id FROM users u
    WHERE u.tenant_id = :tenant_id AND u.external_id = ANY(CAST(:external_ids AS text[]))
      AND NOT EXISTS (SELECT 1 FROM accounts a WHERE a.user_id = u.id)
    """
)

# Credit every (already locked) account, one ledger entry each, one issuance debit.
BULK_CREDIT = """
    WITH credited AS (
        UPDATE accounts a SET balance = a.balance + d.amount, updated_at = now()
        FROM unnest($1::bigint[], $2::bigint[]) AS d(account_id, amount)
        WHERE a.id = d.account_id AND a.status = 'active'
        RETURNING a.id, a.balance, a.held, d.amount
    ),
    entries AS (
        INSERT INTO ledger_entries (tenant_id, from_account_id, to_account_id, amount, kind,
                                    reason, operator, batch_id, balance_after, held_after)
        SELECT $3, $4, c.id, c.amount, 'recharge', $5, $6, $7, c.balance, c.held
        FROM credited c ORDER BY c.id
        RETURNING amount
    ),
    issued AS (
        UPDATE accounts a
        SET balance = a.balance - (SELECT sum(amount) FROM entries), updated_at = now()
        WHERE a.id = $4 AND EXISTS (SELECT 1 FROM entries)
        RETURNING a.id
    )
    SELECT (SELECT count(*) FROM entries) AS credited,
           (SELECT coalesce(sum(amount), 0) FROM entries) AS total,
           (SELECT count(*) FROM issued) AS issued
"""


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under ``session``, inside the session's transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    if not driver.is_in_transaction():
        await session.execute(text("SELECT 1"))  # SQLAlchemy's adapter begins lazily
    assert driver.is_in_transaction()
    return driver


async def resolve_accounts(
    session: AsyncSession, tenant_id: uuid.UUID, external_ids: list[str], *, lock: bool
) -> list[Any]:
    """(external id, account id, status) of the users found; their accounts locked in id
    order when ``lock`` (a preview reads without locking)."""
    driver = await driver_connection(session)
    statement = RESOLVE_AND_LOCK if lock else RESOLVE_ACCOUNTS
    return list(await driver.fetch(statement, external_ids, tenant_id))


async def bulk_credit(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    issuance_id: int,
    batch_id: uuid.UUID,
    account_ids: list[int],
    amounts: list[int],
    reason: str | None,
    operator: str | None,
) -> Any:
    driver = await driver_connection(session)
    return await driver.fetchrow(
        BULK_CREDIT, account_ids, amounts, tenant_id, issuance_id, reason, operator, batch_id
    )


INSERT_BATCH = text(
    """
    INSERT INTO recharge_batches (tenant_id, status, mode, requested, reason, operator,
                                  created_by, created_by_email)
    VALUES (:tenant_id, 'processing', :mode, :requested, :reason, :operator,
            :created_by, :created_by_email)
    RETURNING id, created_at
    """
)

_BATCH_COLUMNS = """
    id, tenant_id, status, mode, requested, succeeded, failed, total_amount, failed_users,
    reason, operator, created_by, created_by_email, approved_by, approved_by_email,
    created_at, approved_at, applied_at
"""
FINISH_BATCH = text(
    f"""
    UPDATE recharge_batches
    SET status = CAST(:status AS varchar), succeeded = :succeeded, failed = :failed,
        total_amount = :total_amount, failed_users = CAST(:failed_users AS jsonb),
        pending_users = CAST(:pending_users AS text[]),
        pending_amounts = CAST(:pending_amounts AS bigint[]),
        applied_at = CASE WHEN :status = 'applied' THEN now() END
    WHERE id = :batch_id
    RETURNING {_BATCH_COLUMNS}
    """
)

APPROVE_BATCH = text(
    f"""
    UPDATE recharge_batches
    SET status = CAST(:status AS varchar), succeeded = :succeeded, failed = :failed,
        total_amount = :total_amount, failed_users = CAST(:failed_users AS jsonb),
        approved_by = :approved_by, approved_by_email = :approved_by_email, approved_at = now(),
        applied_at = CASE WHEN :status = 'applied' THEN now() END
    WHERE id = :batch_id
    RETURNING {_BATCH_COLUMNS}
    """
)

BATCH_BY_ID = text(
    f"SELECT {_BATCH_COLUMNS} FROM recharge_batches WHERE id = :batch_id AND tenant_id = :tenant_id"
)
BATCH_FOR_APPROVAL = text(
    f"""
    SELECT {_BATCH_COLUMNS}, pending_users, pending_amounts FROM recharge_batches
    WHERE id = :batch_id AND tenant_id = :tenant_id
    FOR UPDATE
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


# ---------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------


def verify_statement(tenant_filtered: bool) -> Any:
    """Recompute every balance and held from the entries in one pass (GROUP BY)."""
    # A tenant's entries are found through its accounts (the from/to indexes), so every
    # entry touching one of its accounts counts, whichever tenant the entry names.
    to_filter = from_filter = ""
    if tenant_filtered:
        accounts_of_tenant = "(SELECT id FROM accounts WHERE tenant_id = :tenant_id)"
        to_filter = f"WHERE to_account_id IN {accounts_of_tenant}"
        from_filter = f"WHERE from_account_id IN {accounts_of_tenant}"
    account_filter = "WHERE a.tenant_id = :tenant_id" if tenant_filtered else ""
    hold_filter = "AND tenant_id = :tenant_id" if tenant_filtered else ""
    holds_of_tenant = "WHERE h.tenant_id = :tenant_id" if tenant_filtered else ""
    entries_of_holds = (
        "AND hold_id IN (SELECT id FROM holds WHERE tenant_id = :tenant_id)"
        if tenant_filtered
        else ""
    )
    return text(
        f"""
        WITH moves AS (
            SELECT tenant_id, to_account_id AS account_id, amount AS d_balance,
                   CASE kind WHEN 'hold' THEN amount WHEN 'release' THEN -amount ELSE 0 END
                       AS d_held
            FROM ledger_entries {to_filter}
            UNION ALL
            SELECT tenant_id, from_account_id, -amount,
                   CASE kind WHEN 'capture' THEN -amount ELSE 0 END
            FROM ledger_entries {from_filter}
        ),
        by_tenant AS (
            SELECT account_id, tenant_id, sum(d_balance) AS balance, sum(d_held) AS held
            FROM moves GROUP BY account_id, tenant_id
        ),
        recomputed AS (
            SELECT account_id, sum(balance) AS balance, sum(held) AS held
            FROM by_tenant GROUP BY account_id
        ),
        bad_references AS (
            -- Entries naming an account that does not exist, or one of another tenant.
            SELECT b.tenant_id, b.account_id, a.tenant_id AS account_tenant_id
            FROM by_tenant b LEFT JOIN accounts a ON a.id = b.account_id
            WHERE a.id IS NULL OR a.tenant_id <> b.tenant_id
        ),
        open_holds AS (
            SELECT account_id, sum(amount) AS held FROM holds
            WHERE status = 'held' {hold_filter}
            GROUP BY account_id
        ),
        checked AS (
            SELECT a.id, a.tenant_id, a.kind, a.user_id, a.balance, a.held,
                   coalesce(r.balance, 0) AS recomputed_balance,
                   coalesce(r.held, 0) AS recomputed_held,
                   coalesce(h.held, 0) AS open_holds
            FROM accounts a
            LEFT JOIN recomputed r ON r.account_id = a.id
            LEFT JOIN open_holds h ON h.account_id = a.id
            {account_filter}
        ),
        zero_sum AS (
            SELECT tenant_id, sum(balance) AS total FROM checked
            GROUP BY tenant_id HAVING sum(balance) <> 0
        ),
        hold_moves AS (
            SELECT hold_id,
                   coalesce(sum(amount) FILTER (WHERE kind = 'hold'), 0) AS amount,
                   coalesce(sum(amount) FILTER (WHERE kind = 'capture'), 0) AS captured,
                   coalesce(sum(amount) FILTER (WHERE kind = 'release'), 0) AS released,
                   coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0) AS refunded
            FROM ledger_entries WHERE hold_id IS NOT NULL {entries_of_holds}
            GROUP BY hold_id
        ),
        bad_holds AS (
            -- A hold whose amount, capture, release or refunds are not what its entries
            -- moved (a settled hold edited, or flipped from captured to released).
            SELECT h.tenant_id, h.id, h.account_id, a.kind AS account_kind, a.user_id,
                   h.reference, h.status, h.amount, h.captured, h.released, h.refunded,
                   coalesce(m.amount, 0) AS entries_amount,
                   coalesce(m.captured, 0) AS entries_captured,
                   coalesce(m.released, 0) AS entries_released,
                   coalesce(m.refunded, 0) AS entries_refunded
            FROM holds h JOIN accounts a ON a.id = h.account_id
            LEFT JOIN hold_moves m ON m.hold_id = h.id
            {holds_of_tenant}
        )
        SELECT
            (SELECT count(*) FROM checked) AS accounts_checked,
            (SELECT coalesce(json_agg(m ORDER BY m.id), '[]') FROM (
                SELECT * FROM checked
                WHERE balance <> recomputed_balance OR held <> recomputed_held
                   OR held <> open_holds
                ORDER BY id LIMIT :max_mismatches
            ) m) AS mismatches,
            (SELECT coalesce(json_agg(z), '[]') FROM zero_sum z) AS unbalanced_tenants,
            (SELECT coalesce(json_agg(b), '[]') FROM (
                SELECT * FROM bad_references ORDER BY account_id LIMIT :max_mismatches
            ) b) AS bad_references,
            (SELECT coalesce(json_agg(bh ORDER BY bh.id), '[]') FROM (
                SELECT * FROM bad_holds
                WHERE (amount, captured, released, refunded)
                      <> (entries_amount, entries_captured, entries_released, entries_refunded)
                ORDER BY id LIMIT :max_mismatches
            ) bh) AS bad_holds
        """
    )


async def run(session: AsyncSession, statement: Any, params: dict[str, Any]) -> Row[Any] | None:
    """Execute one statement and return its first row."""
    return (await session.execute(statement, params)).first()
