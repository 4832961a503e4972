"""Daily refill benchmark: a plan of 10,000 users topped up to its daily amount.

Run as ``.venv/bin/python bench/plan_refill.py`` (``--users``, ``--runs``, ``--chunk``). It
creates a scratch database on the server of SWAPMETER_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/postgres), migrates it, and in SQL seeds a tenant
with ``--users`` users and their accounts, a plan of 5 daily Tokens (06:00 in
Asia/Seoul) and every user on it. Then it times ``billing.daily_refill.refill_due_plans``
as the workers' housekeeping calls it, once per simulated day (the clock is injected,
one day later each run):

- day 1: the first refill (nothing to expire yet), reported apart;
- days 2 to ``--runs`` + 1: the steady state, each after a tenth of the users spent 3 of
  their daily Tokens (one capture each, not timed): every user's old daily grant expires
  (``expire`` entries) and a new one is granted (``grant`` entries and lots).

It checks that each day paid every user once, prints each run, the median of the steady
runs and users per second, the number of CPUs and the load average, and drops the
database. Target: at most 2 s for 10,000 users on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import _harness as harness  # noqa: E402
from sqlalchemy import text  # noqa: E402

from app.core.db import Database  # noqa: E402
from app.tenancy import plans  # noqa: E402
from billing import daily_refill, holds  # noqa: E402
from billing import service as billing  # noqa: E402


async def _seed(db: Database, users: int) -> uuid.UUID:
    async with db.session() as s:
        tenant_id = (
            await s.execute(
                text("INSERT INTO tenants (name, slug) VALUES ('Bench', :slug) RETURNING id"),
                {"slug": f"bench-{uuid.uuid4().hex[:8]}"},
            )
        ).scalar_one()
        await billing.open_tenant_accounts(s, tenant_id)
        spec = plans.check_spec(daily_free_tokens=5, refill_time="06:00", timezone="Asia/Seoul")
        _, plan, _ = await plans.put_plan(s, tenant_id, "daily", spec)
        await s.execute(
            text(
                "INSERT INTO users (tenant_id, external_id, plan_id) "
                "SELECT :t, 'user-' || lpad(n::text, 6, '0'), :p FROM generate_series(1, :n) n"
            ),
            {"t": tenant_id, "p": plan.id, "n": users},
        )
        await s.execute(
            text(
                "INSERT INTO accounts (tenant_id, user_id, kind) "
                "SELECT :t, id, 'user' FROM users WHERE tenant_id = :t ORDER BY id"
            ),
            {"t": tenant_id},
        )
    async with db.autocommit() as conn:
        await conn.execute(text("VACUUM ANALYZE users"))
        await conn.execute(text("VACUUM ANALYZE accounts"))
    return tenant_id


async def _spend(db: Database, tenant_id: uuid.UUID, every: int, day: int) -> None:
    """A tenth of the users spend 3 of their daily Tokens (hold and capture)."""
    async with db.session() as s:
        ids = (
            await s.execute(
                text("SELECT id FROM users WHERE tenant_id = :t AND id % :every = 0"),
                {"t": tenant_id, "every": every},
            )
        ).scalars()
        user_ids = list(ids)
    for user_id in user_ids:
        async with db.session() as s:
            await holds.hold(s, tenant_id, user_id, f"bench-{day}-{user_id}", 3)
            await holds.capture(s, tenant_id, f"bench-{day}-{user_id}", 3)


async def _run(args: argparse.Namespace) -> None:
    name = f"swapmeter_bench_refill_{uuid.uuid4().hex[:8]}"
    async with harness.scratch_database(name) as url:
        db = Database(url, pool_size=4)
        try:
            tenant_id = await _seed(db, args.users)
            start = datetime(2031, 5, 1, 0, 0, tzinfo=UTC)  # 09:00 in Seoul
            timings: list[float] = []
            for day in range(args.runs + 1):
                if day:
                    await _spend(db, tenant_id, 10, day)
                now = start + timedelta(days=day)
                began = time.perf_counter()
                outcome = await daily_refill.refill_due_plans(
                    db, now, tenant_id=tenant_id, chunk=args.chunk
                )
                seconds = time.perf_counter() - began
                assert outcome.users == args.users, outcome
                label = "first refill" if day == 0 else f"day {day + 1}"
                print(
                    f"{label}: {seconds:.3f} s, {outcome.users:,} users, "
                    f"{outcome.granted:,} Tokens granted, {outcome.expired:,} expired"
                )
                if day:
                    timings.append(seconds)
            median = statistics.median(timings)
            print(
                f"refill of {args.users:,} users (steady state, median of {len(timings)}): "
                f"{median:.3f} s, {args.users / median:,.0f} users/s "
                f"(chunk {args.chunk:,}; {os.cpu_count()} CPUs, load {harness.load_average()})"
            )
        finally:
            await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=daily_refill.CHUNK)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
