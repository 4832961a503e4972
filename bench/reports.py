"""Reports benchmark: daily usage, the user search and the ledger export on a large tenant.

Run as ``.venv/bin/python bench/reports.py`` (``--users``, ``--entries``, ``--runs``). It
creates a scratch database on the server of SWAPMETER_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/postgres), migrates it, serves the real app under
uvicorn on a real socket, signs in and creates a tenant through HTTP. Then, in SQL
(``bench/_seed.py``, shared with ``bench/dashboard.py``):

- set-up (not timed as a report): ``--users`` users (``user-000000`` ...) and their
  accounts from ``generate_series``, then ``--entries`` ledger entries over the last 30 UTC
  days from ``generate_series`` in statements of 100,000 rows (so the rollup triggers run
  as they do under traffic, one delta per statement, day and kind): a quarter each of
  recharges, holds, captures and releases, spread over all users. Balances in these rows
  are not consistent (verify is not run); jobs are not seeded (their rollups are the same
  table and path);
- the rollup: ``billing.maintenance.fold_usage``, timed; then 1,000 more entries today,
  left unfolded, so that each report also reads live deltas.

Timed over HTTP, after one warm-up each: p50 and p95 of ``--runs`` usage reports of 30
days (JSON) and of the same as CSV, of a users prefix search page (``q=user-0042``, 50 per
page) and of a page sorted by balance; then one ledger export of the 30 days, streamed and
counted, in rows/s; last, the write path with and without the rollup trigger
(``_write_path``). It prints the figures and the number of CPUs, and drops the database.
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

import asyncpg
import httpx

BENCH = Path(__file__).resolve().parent
# The repository first: bench/inference.py must not shadow the inference package.
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import _harness as harness  # noqa: E402
import _seed as seed  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


HOLD_SQL = """
INSERT INTO ledger_entries (tenant_id, from_account_id, to_account_id, amount, kind, hold_id,
                            reference, balance_after, held_after)
VALUES ($1, $2, $2, 1, 'hold', $3, 'job:bench', 100, 1)
"""


async def _write_path(database_url: str, tenant_id: str, per_connection: int) -> dict[str, float]:
    """Single-entry inserts (a swap's hold is one such statement) per second, from 8
    connections at once, each its own transaction, each connection on its own users, with
    the rollup trigger on and off. The trigger is switched off for the "off" run only."""
    connections = [await asyncpg.connect(database_url) for _ in range(8)]
    first, _, _ = await seed.accounts(connections[0], tenant_id)
    tenant = uuid.UUID(tenant_id)

    async def insert(n: int, conn: asyncpg.Connection) -> None:
        for i in range(per_connection):
            await conn.execute(HOLD_SQL, tenant, first + n * per_connection + i, i)

    rates = {}
    try:
        for trigger in ("on", "off", "on"):
            action = "ENABLE" if trigger == "on" else "DISABLE"
            await connections[0].execute(
                f"ALTER TABLE ledger_entries {action} TRIGGER usage_ledger_rollup"
            )
            started = time.perf_counter()
            await asyncio.gather(*(insert(n, c) for n, c in enumerate(connections)))
            rate = 8 * per_connection / (time.perf_counter() - started)
            rates[trigger] = max(rates.get(trigger, 0.0), rate)
    finally:
        await connections[0].execute(
            "ALTER TABLE ledger_entries ENABLE TRIGGER usage_ledger_rollup"
        )
        for c in connections:
            await c.close()
    return rates


async def _timed(client: httpx.AsyncClient, runs: int, path: str, **kwargs: object) -> list[float]:
    response = await client.get(path, **kwargs)  # type: ignore[arg-type]
    response.raise_for_status()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = await client.get(path, **kwargs)  # type: ignore[arg-type]
        response.raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def _export(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> tuple[int, float]:
    started = time.perf_counter()
    lines = 0
    async with client.stream("GET", path, params=params) as response:
        response.raise_for_status()
        async for piece in response.aiter_bytes():
            lines += piece.count(b"\n")
    return lines - 1, time.perf_counter() - started


async def main(users: int, entries: int, runs: int) -> None:
    port = harness.free_port()
    async with harness.scratch_database("swapmeter_bench_reports") as database_url:
        server = harness.start_server(
            harness.service_env(database_url, jobs_housekeeping_seconds="3600"), port
        )
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=600
            ) as client:
                await harness.wait_ready(client, server)
                auth = await harness.admin_headers(client)
                tenant_id = await harness.create_tenant(client, auth, "Reports bench")
                seeded = await seed.seed(database_url, tenant_id, users, entries)
                print(f"set-up: {users:,} users and {entries:,} entries in {seeded:.1f} s (SQL)")
                folded, written = await seed.fold(database_url)
                print(f"rollup: fold_usage {folded * 1000:.0f} ms ({written:,} rollup rows)")
                await seed.live_tail(database_url, tenant_id, users)

                today = datetime.now(UTC).date()
                days = {"from": str(today - timedelta(days=29)), "to": str(today)}
                base = f"/api/v1/admin/tenants/{tenant_id}"
                figures = {
                    "usage report, 30 days (JSON)": await _timed(
                        client, runs, f"{base}/usage", params=days, headers=auth
                    ),
                    "usage report, 30 days (CSV)": await _timed(
                        client,
                        runs,
                        f"{base}/usage",
                        params=days,
                        headers={**auth, "Accept": "text/csv"},
                    ),  # fmt: skip
                    "users prefix search page (q=user-0042)": await _timed(
                        client, runs, f"{base}/users", params={"q": "user-0042"}, headers=auth
                    ),
                    "users page sorted by -balance": await _timed(
                        client, runs, f"{base}/users", params={"sort": "-balance"}, headers=auth
                    ),
                }
                for name, times in figures.items():
                    print(
                        f"{name}: p50 {statistics.median(times):.1f} ms, "
                        f"p95 {_pct(times, 0.95):.1f} ms ({runs} runs)"
                    )
                client.headers.update(auth)
                rows, seconds = await _export(client, f"{base}/ledger/export", days)
                print(
                    f"ledger export, 30 days: {rows:,} rows in {seconds:.1f} s, "
                    f"{rows / seconds:,.0f} rows/s"
                )
                rates = await _write_path(database_url, tenant_id, 500)
                print(
                    "write path, single-entry inserts from 8 connections: "
                    f"{rates['on']:,.0f}/s with the rollup trigger, {rates['off']:,.0f}/s "
                    "without (best of runs)"
                )
        finally:
            harness.stop(server)
    print(f"os.cpu_count() = {os.cpu_count()}; load average {harness.load_average()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.users, args.entries, args.runs))
