"""Daily usage rollups: folding them, reading them, and checking them against the ledger.

Triggers (migration 0012) append a row to ``usage_deltas`` in every transaction that writes
ledger entries or ends a job; ``fold`` moves committed deltas into ``usage_daily``, and a
report reads both (docs/architecture.md, "Reports"). A metric is ``ledger:<kind>`` (count
and Tokens of the entries of that kind; adjustments signed), ``job:<kind>:<status>``
(count and video seconds of the jobs that ended so) or ``active_users``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

ZERO = Decimal(0)

FOLD_LOCK = text("SELECT pg_try_advisory_xact_lock(73217012)")

# Deltas are moved in id order, a bounded batch per statement; an uncommitted delta is
# invisible here and waits for the next fold, so no commit order can lose one.
FOLD = text(
    """
    WITH moved AS (
        DELETE FROM usage_deltas
        WHERE id IN (SELECT id FROM usage_deltas ORDER BY id LIMIT :limit)
        RETURNING tenant_id, day, metric, count, tokens, seconds
    )
    INSERT INTO usage_daily (tenant_id, day, metric, count, tokens, seconds)
    SELECT tenant_id, day, metric, sum(count), sum(tokens), sum(seconds)
    FROM moved GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, day, metric) DO UPDATE
    SET count = usage_daily.count + excluded.count,
        tokens = usage_daily.tokens + excluded.tokens,
        seconds = usage_daily.seconds + excluded.seconds
    """
)

DAILY = text(
    """
    SELECT day, metric, sum(count) AS count, sum(tokens) AS tokens, sum(seconds) AS seconds
    FROM (
        SELECT day, metric, count, tokens, seconds FROM usage_daily
        WHERE tenant_id = :tenant_id AND day BETWEEN :first AND :last
        UNION ALL
        SELECT day, metric, count, tokens, seconds FROM usage_deltas
        WHERE tenant_id = :tenant_id AND day BETWEEN :first AND :last
    ) u
    GROUP BY day, metric
    """
)


@dataclass(frozen=True)
class Total:
    count: int
    tokens: int
    seconds: Decimal


async def fold(session: AsyncSession, *, limit: int = 50_000) -> int | None:
    """Fold up to ``limit`` deltas into the daily rollups; returns the rollup rows
    written (0: nothing to fold), or None when another process is folding (an advisory
    lock: one folder at a time, so that two never race on the same rollup rows)."""
    locked = (await session.execute(FOLD_LOCK)).scalar_one()
    if not locked:
        return None
    written = await session.execute(FOLD, {"limit": limit})
    return int(written.rowcount or 0)  # type: ignore[attr-defined]


async def daily(
    session: AsyncSession, tenant_id: uuid.UUID, first: date, last: date
) -> dict[date, dict[str, Total]]:
    """Day -> metric -> total, for the days from ``first`` to ``last`` that have any."""
    rows = await session.execute(DAILY, {"tenant_id": tenant_id, "first": first, "last": last})
    days: dict[date, dict[str, Total]] = {}
    for r in rows:
        days.setdefault(r.day, {})[r.metric] = Total(int(r.count), int(r.tokens), r.seconds)
    return days


# -- the verify check usage_rollup ----------------------------------------------------------

# Rollups (folded and not) against a recount of the ledger, the ended jobs and the active
# users, per tenant, day and metric; only the differences come back.
_CHECK = """
WITH rolled AS (
    SELECT tenant_id, day, metric, sum(count) AS count, sum(tokens) AS tokens,
           sum(seconds) AS seconds
    FROM (SELECT tenant_id, day, metric, count, tokens, seconds FROM usage_daily {where}
          UNION ALL
          SELECT tenant_id, day, metric, count, tokens, seconds FROM usage_deltas {where}) u
    GROUP BY 1, 2, 3
), counted AS (
    SELECT e.tenant_id, (e.created_at AT TIME ZONE 'UTC')::date AS day,
           'ledger:' || e.kind AS metric, count(*) AS count,
           sum(CASE WHEN e.kind = 'adjustment' AND a.kind IS DISTINCT FROM 'user'
                    THEN -e.amount ELSE e.amount END) AS tokens,
           0::numeric AS seconds
    FROM ledger_entries e
    LEFT JOIN accounts a ON a.id = e.to_account_id AND e.kind = 'adjustment'
    {where_e}
    GROUP BY 1, 2, 3
    UNION ALL
    SELECT j.tenant_id, (coalesce(j.finished_at, j.created_at) AT TIME ZONE 'UTC')::date,
           'job:' || j.kind || ':' || j.status, count(*), 0,
           sum(CASE WHEN j.kind = 'video' THEN coalesce(j.seconds_done, 0)::numeric ELSE 0 END)
    FROM jobs j
    WHERE j.status IN ('succeeded', 'failed', 'canceled') {and_j}
    GROUP BY 1, 2, 3
    UNION ALL
    SELECT e.tenant_id, (e.created_at AT TIME ZONE 'UTC')::date, 'active_users',
           count(DISTINCT e.from_account_id), 0, 0
    FROM ledger_entries e WHERE e.kind = 'hold' {and_e}
    GROUP BY 1, 2
)
SELECT coalesce(r.tenant_id, c.tenant_id) AS tenant_id, coalesce(r.day, c.day) AS day,
       coalesce(r.metric, c.metric) AS metric,
       r.count AS rolled_count, r.tokens AS rolled_tokens, r.seconds AS rolled_seconds,
       c.count AS counted_count, c.tokens AS counted_tokens, c.seconds AS counted_seconds
FROM rolled r FULL JOIN counted c
  ON c.tenant_id = r.tenant_id AND c.day = r.day AND c.metric = r.metric
WHERE r.count IS DISTINCT FROM c.count OR r.tokens IS DISTINCT FROM c.tokens
   OR r.seconds IS DISTINCT FROM c.seconds
ORDER BY 1, 2, 3
LIMIT :limit
"""


def _check_statement(tenant_filtered: bool) -> Any:
    if not tenant_filtered:
        return text(_CHECK.format(where="", where_e="", and_j="", and_e=""))
    return text(
        _CHECK.format(
            where="WHERE tenant_id = :tenant_id",
            where_e="WHERE e.tenant_id = :tenant_id",
            and_j="AND j.tenant_id = :tenant_id",
            and_e="AND e.tenant_id = :tenant_id",
        )
    )


async def rollup_mismatches(
    session: AsyncSession, tenant_id: uuid.UUID | None, limit: int
) -> list[dict[str, Any]]:
    """The check ``usage_rollup``: each (tenant, day, metric) whose rollup disagrees with
    the ledger's entries, the ended jobs or the users who held Tokens that day.

    This one reads the whole ledger (of the tenant): it is the check, not a report."""
    params: dict[str, Any] = {"limit": limit}
    if tenant_id is not None:
        params["tenant_id"] = tenant_id
    rows = await session.execute(_check_statement(tenant_id is not None), params)
    found = []
    for r in rows:
        rolled = (r.rolled_count or 0, r.rolled_tokens or 0, r.rolled_seconds or 0)
        counted = (r.counted_count or 0, r.counted_tokens or 0, r.counted_seconds or 0)
        found.append(
            {
                "tenant_id": r.tenant_id,
                "account_id": None,
                "account_kind": None,
                "user_id": None,
                "check": "usage_rollup",
                "stored": int(rolled[1]),
                "recomputed": int(counted[1]),
                "detail": (
                    f"{r.metric} on {r.day}: the rollup says count, Tokens, seconds = "
                    f"{_plain(rolled)}, the ledger and jobs say {_plain(counted)}"
                ),
            }
        )
    return found


def _plain(values: tuple[Any, Any, Any]) -> str:
    count, tokens, seconds = values
    return f"({int(count)}, {int(tokens)}, {Decimal(seconds).normalize()})"
