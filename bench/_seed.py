"""The large tenant the reports and dashboard benchmarks share, seeded in SQL.

``seed``: ``users`` users (``user-000000`` ...) with their accounts from
``generate_series``, then ``entries`` ledger entries over the last 30 UTC days in
statements of 100,000 rows (so the rollup triggers run as they do under traffic, one
delta per statement, day and kind): a quarter each of recharges, holds, captures and
releases, spread over all users. Balances in these rows are not consistent (verify is
not run); jobs are not seeded. ``fold``: the rollup (``billing.maintenance.fold_usage``).
``live_tail``: 1,000 more entries today, left unfolded. ``heavy_user``: many entries of
one user, for a deep page of one user's ledger.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import asyncpg

STATEMENT_ROWS = 100_000

USERS_SQL = """
WITH u AS (
    INSERT INTO users (tenant_id, external_id)
    SELECT $1, 'user-' || lpad(n::text, 6, '0') FROM generate_series(0, $2 - 1) n
    RETURNING id, tenant_id
)
INSERT INTO accounts (tenant_id, user_id, kind, balance)
SELECT tenant_id, id, 'user', (id * 7919) % 1000 FROM u
"""

# Entry n of a statement: a user account by n (the users' accounts have consecutive ids,
# made by one statement), a kind by n % 4, a time in the last 30 days.
ENTRIES_SQL = """
INSERT INTO ledger_entries (tenant_id, from_account_id, to_account_id, amount, kind,
                            hold_id, reference, balance_after, held_after, created_at)
SELECT $1,
       CASE WHEN n % 4 = 0 THEN $2 ELSE $8 + n % $9 END,
       CASE n % 4 WHEN 2 THEN $3 ELSE $8 + n % $9 END,
       1 + n % 5,
       (ARRAY['recharge', 'hold', 'capture', 'release'])[1 + n % 4],
       CASE WHEN n % 4 = 0 THEN NULL ELSE n END,
       CASE WHEN n % 4 = 0 THEN NULL ELSE 'job:' || md5(n::text)::uuid END,
       100, 0,
       $4::timestamptz - (n % $5::int) * interval '1 day' - (n % 86000) * interval '1 second'
FROM generate_series($6, $7 - 1) n
"""


async def accounts(conn: asyncpg.Connection, tenant_id: str) -> tuple[int, int, int]:
    """The first user account's id, and the issuance and revenue accounts' of the tenant."""
    row = await conn.fetchrow(
        "SELECT min(id) FILTER (WHERE kind = 'user'), min(id) FILTER (WHERE kind = "
        "'issuance'), min(id) FILTER (WHERE kind = 'revenue') FROM accounts "
        "WHERE tenant_id = $1",
        uuid.UUID(tenant_id),
    )
    return row[0], row[1], row[2]


async def seed(database_url: str, tenant_id: str, users: int, entries: int) -> float:
    conn = await asyncpg.connect(database_url)
    try:
        started = time.perf_counter()
        await conn.execute(USERS_SQL, uuid.UUID(tenant_id), users)
        first_account, issuance, revenue = await accounts(conn, tenant_id)
        now = datetime.now(UTC)
        for start in range(0, entries, STATEMENT_ROWS):
            await conn.execute(
                ENTRIES_SQL,
                uuid.UUID(tenant_id),
                issuance,
                revenue,
                now,
                30,
                start,
                min(entries, start + STATEMENT_ROWS),
                first_account,
                users,
            )
        await conn.execute("VACUUM ANALYZE")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def fold(database_url: str) -> tuple[float, int]:
    from app.core.db import Database
    from billing.maintenance import fold_usage

    db = Database(database_url)
    try:
        started = time.perf_counter()
        written = await fold_usage(db)
        return time.perf_counter() - started, written
    finally:
        await db.dispose()


async def live_tail(database_url: str, tenant_id: str, users: int) -> None:
    """1,000 entries today after the fold: deltas a report reads live."""
    conn = await asyncpg.connect(database_url)
    try:
        first, issuance, revenue = await accounts(conn, tenant_id)
        for n in range(10):
            await conn.execute(
                ENTRIES_SQL, uuid.UUID(tenant_id), issuance, revenue, datetime.now(UTC), 1,
                n * 100, n * 100 + 100, first, users,
            )  # fmt: skip
    finally:
        await conn.close()


async def heavy_user(database_url: str, tenant_id: str, external_id: str, entries: int) -> None:
    """``entries`` more entries of one user (the same mix, over the last 30 days)."""
    conn = await asyncpg.connect(database_url)
    try:
        _, issuance, revenue = await accounts(conn, tenant_id)
        account = await conn.fetchval(
            "SELECT a.id FROM accounts a JOIN users u ON u.id = a.user_id "
            "WHERE u.tenant_id = $1 AND u.external_id = $2",
            uuid.UUID(tenant_id),
            external_id,
        )
        now = datetime.now(UTC)
        for start in range(0, entries, STATEMENT_ROWS):
            end = min(entries, start + STATEMENT_ROWS)
            await conn.execute(
                ENTRIES_SQL, uuid.UUID(tenant_id), issuance, revenue, now, 30, start, end,
                account, 1,
            )  # fmt: skip
        await conn.execute("ANALYZE ledger_entries")
    finally:
        await conn.close()
