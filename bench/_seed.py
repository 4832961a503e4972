"""The large tenant the reports and dashboard benchmarks share, seeded in SQL.

``seed``: ``users`` users (``user-000000`` ...) with their accounts from
``generate_series``, then ``entries`` ledger entries over the last 30 UTC days in
statements of 100,000 rows (so the rollup triggers run as they do under traffic, one
delta per statement, day and kind): a quarter each of recharges, holds, captures and
releases, spread over all users. Balances in these rows are not consistent (verify is
not run); jobs are not seeded. ``fold``: the rollup (``billing.maintenance.fold_usage``).
``live_tail``: 1,000 more entries today, left unfolded. ``heavy_user``: many entries of
one user, for a deep page of one user's ledger. ``jobs``: ended jobs over the last 30
days (mixed kinds and statuses, spread over all users, many more for one user), written
straight into the table (not folded into the rollups, no holds); ``flags``: anomaly
flags, most resolved; ``audit_records``: audit records of the tenant and of no tenant
(their hash chain is not a real one: verify is not run).
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


# Job n of ``$8``: a user by n (``$3`` the first user's id, ``$4`` users), a video one in
# 7, 3 failed and 1 canceled in 25 (the others succeeded), created at the n-th of ``$8``
# even steps over the last 30 days (``$5`` now), so that, as under traffic, the table
# holds jobs in the order they came; run for 2 s (videos 20 s).
JOBS_SQL = """
INSERT INTO jobs (id, tenant_id, user_id, kind, status, progress, source_key, target_key,
                  target_seconds, hold_reference, unit_price, tokens_held, tokens_charged,
                  error_code, error_message, attempts, created_at, started_at, finished_at)
SELECT j.id, $1, $3 + n % $4, j.kind, j.status, CASE j.status WHEN 'succeeded' THEN 1 ELSE 0 END,
       'bench/' || j.id || '/source', 'bench/' || j.id || '/target',
       CASE j.kind WHEN 'video' THEN 10 END, 'job:' || j.id, 1,
       CASE j.kind WHEN 'video' THEN 10 ELSE 1 END,
       CASE WHEN j.status <> 'succeeded' THEN 0 WHEN j.kind = 'video' THEN 10 ELSE 1 END,
       CASE j.status WHEN 'failed' THEN 'NoFaceDetected' END,
       CASE j.status WHEN 'failed' THEN 'No face was found in the source image' END,
       1, j.at, j.at + interval '1 second',
       j.at + CASE j.kind WHEN 'video' THEN interval '21 seconds' ELSE interval '3 seconds' END
FROM generate_series($6, $7 - 1) n
CROSS JOIN LATERAL (SELECT
    md5($2 || n::text)::uuid AS id,
    CASE WHEN n % 7 = 0 THEN 'video' ELSE 'image' END AS kind,
    CASE WHEN n % 25 < 3 THEN 'failed' WHEN n % 25 = 3 THEN 'canceled' ELSE 'succeeded' END
        AS status,
    $5::timestamptz - interval '30 days' + n * (interval '30 days' / $8::int) AS at
) j
"""


async def _user_ids(conn: asyncpg.Connection, tenant_id: str, external_id: str) -> tuple[int, int]:
    """The tenant's first user's id (``seed``'s users have consecutive ids), and one's."""
    row = await conn.fetchrow(
        "SELECT min(id), min(id) FILTER (WHERE external_id = $2) FROM users WHERE tenant_id = $1",
        uuid.UUID(tenant_id),
        external_id,
    )
    return row[0], row[1]


async def jobs(
    database_url: str, tenant_id: str, users: int, count: int, heavy: str, heavy_count: int
) -> float:
    """``count`` jobs over all users, then ``heavy_count`` more of the user ``heavy``."""
    conn = await asyncpg.connect(database_url)
    try:
        started = time.perf_counter()
        first, heavy_id = await _user_ids(conn, tenant_id, heavy)
        now = datetime.now(UTC)
        for label, user, spread, total in (("all", first, users, count),
                                           ("heavy", heavy_id, 1, heavy_count)):  # fmt: skip
            for start in range(0, total, STATEMENT_ROWS):
                end = min(total, start + STATEMENT_ROWS)
                await conn.execute(
                    JOBS_SQL, uuid.UUID(tenant_id), f"{tenant_id}:{label}:", user, spread, now,
                    start, end, total,
                )  # fmt: skip
        await conn.execute("VACUUM ANALYZE jobs")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def flags(database_url: str, tenant_id: str, users: int, count: int, open_every: int) -> None:
    """``count`` flags of as many users (one in ``open_every`` open, the others resolved)."""
    conn = await asyncpg.connect(database_url)
    try:
        first, _ = await _user_ids(conn, tenant_id, "")
        await conn.execute(
            """
            INSERT INTO anomaly_flags (tenant_id, user_id, rule, observed, "limit", action,
                evidence, status, created_at, resolution, note, resolved_at, resolved_by)
            SELECT $1, $2 + n * 7 % $3, 'requests_per_minute', 31, 30, 'freeze',
                   jsonb_build_object('rule', 'requests_per_minute', 'observed', 31,
                                      'limit', 30, 'window_seconds', 60),
                   s.status, s.at,
                   CASE s.status WHEN 'resolved' THEN 'unfreeze' END,
                   CASE s.status WHEN 'resolved' THEN 'reviewed' END,
                   CASE s.status WHEN 'resolved' THEN s.at + interval '1 hour' END,
                   CASE s.status WHEN 'resolved' THEN 'bench@swapmeter.test' END
            FROM generate_series(0, $4 - 1) n
            CROSS JOIN LATERAL (SELECT
                CASE WHEN n % $5 = 0 THEN 'open' ELSE 'resolved' END AS status,
                now() - (n % 30) * interval '1 day' - (n % 86000) * interval '1 second' AS at
            ) s
            """,
            uuid.UUID(tenant_id), first, users, count, open_every,
        )  # fmt: skip
        await conn.execute("ANALYZE anomaly_flags")
    finally:
        await conn.close()


async def audit_records(database_url: str, tenant_id: str, count: int) -> None:
    """``count`` audit records: two in three of the tenant, the others of no tenant, over
    the last 30 days, in id order (hashes made up: the chain is not verified here)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """
            INSERT INTO audit_log (at, actor, actor_ip, action, tenant_id, target, details,
                                   prev_hash, hash)
            SELECT now() - interval '30 days' + n * (interval '30 days' / $2::int),
                   'bench@swapmeter.test', '127.0.0.1',
                   (ARRAY['user.freeze', 'price.update', 'job.cancel', 'auth.login'])[1 + n % 4],
                   CASE WHEN n % 3 = 2 THEN NULL ELSE $1::uuid END,
                   'user:user-' || lpad((n % 1000)::text, 6, '0'),
                   jsonb_build_object('n', n),
                   encode(sha256(('bench' || n - 1)::bytea), 'hex'),
                   encode(sha256(('bench' || n)::bytea), 'hex')
            FROM generate_series(1, $2) n
            """,
            uuid.UUID(tenant_id), count,
        )  # fmt: skip
        await conn.execute("ANALYZE audit_log")
    finally:
        await conn.close()
