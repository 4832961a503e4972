"""The SQL of bulk recharge: the batches, and crediting many accounts in one statement.

The account and ledger statements of single movements are in ``billing/repository.py``
(whose lock order these keep: user accounts in id order, then the tenant's issuance
account).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

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

# Credit every (already locked) account, one ledger entry each, one issuance debit. With
# an expiry ($8), the entries are grants and each one records its lot, as ``grant`` does.
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
        SELECT $3, $4, c.id, c.amount,
               CASE WHEN $8::timestamptz IS NULL THEN 'recharge' ELSE 'grant' END,
               $5, $6, $7, c.balance, c.held
        FROM credited c ORDER BY c.id
        RETURNING id, to_account_id, amount
    ),
    lots AS (
        INSERT INTO token_grants (tenant_id, account_id, entry_id, amount, remaining,
                                  expires_at, label)
        SELECT $3, e.to_account_id, e.id, e.amount, e.amount, $8::timestamptz, $9::varchar
        FROM entries e WHERE $8::timestamptz IS NOT NULL
        ORDER BY e.to_account_id
        RETURNING id
    ),
    issued AS (
        UPDATE accounts a
        SET balance = a.balance - (SELECT sum(amount) FROM entries), updated_at = now()
        WHERE a.id = $4 AND EXISTS (SELECT 1 FROM entries)
        RETURNING a.id
    )
    SELECT (SELECT count(*) FROM entries) AS credited,
           (SELECT coalesce(sum(amount), 0) FROM entries) AS total,
           (SELECT count(*) FROM issued) AS issued,
           (SELECT count(*) FROM lots) AS lots
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
    expires_at: datetime | None = None,
    label: str | None = None,
) -> Any:
    driver = await driver_connection(session)
    return await driver.fetchrow(
        BULK_CREDIT,
        account_ids,
        amounts,
        tenant_id,
        issuance_id,
        reason,
        operator,
        batch_id,
        expires_at,
        label,
    )


INSERT_BATCH = text(
    """
    INSERT INTO recharge_batches (tenant_id, status, mode, requested, reason, operator,
                                  created_by, created_by_email, expires_at, label)
    VALUES (:tenant_id, 'processing', :mode, :requested, :reason, :operator,
            :created_by, :created_by_email, :expires_at, :label)
    RETURNING id, created_at
    """
)

_BATCH_COLUMNS = """
    id, tenant_id, status, mode, requested, succeeded, failed, total_amount, failed_users,
    reason, operator, created_by, created_by_email, approved_by, approved_by_email,
    created_at, approved_at, applied_at, expires_at, label
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

# A rejection: nothing is credited; who decided is recorded as approvals are.
REJECT_BATCH = text(
    f"""
    UPDATE recharge_batches
    SET status = 'rejected', succeeded = 0, total_amount = 0,
        pending_users = NULL, pending_amounts = NULL,
        approved_by = :by, approved_by_email = :by_email, approved_at = now()
    WHERE id = :batch_id
    RETURNING {_BATCH_COLUMNS}
    """
)

# The latest batches of a tenant (few per tenant: ix_recharge_batches_tenant_id).
LIST_BATCHES = text(
    f"""
    SELECT {_BATCH_COLUMNS} FROM recharge_batches
    WHERE tenant_id = :tenant_id AND status <> 'processing'
      AND (CAST(:status AS varchar) IS NULL OR status = CAST(:status AS varchar))
    ORDER BY created_at DESC, id DESC
    LIMIT :limit
    """
)
