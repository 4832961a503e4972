"""Bulk recharge benchmark: 10,000 users credited through the HTTP API vs the naive loop.

Run as ``.venv/bin/python bench/bulk_recharge.py``. It creates a scratch database on the
server of SWAPMETER_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres),
migrates it, serves the real app under uvicorn on a real socket, signs in, creates a
tenant, imports 10,000 users through /users/import, then times:

- ``http``: POST /recharges/bulk of 10,000 entries (median of --runs, new Idempotency-Key
  each run, after one warm-up), measured from the client: request sent to report read;
- ``naive``: the seed article's approach on the same database and users, straight through
  asyncpg: one transaction, and per user one UPDATE of the account plus one INSERT of the
  ledger entry (median of --naive-runs).

The two kinds of run alternate so that both see the same background load; on a shared
machine the figures still move from run to run, so compare medians.

It prints both medians, the ratio and the number of CPUs, and drops the scratch database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import orjson

BENCH = Path(__file__).resolve().parent
# The repository first: bench/inference.py must not shadow the inference package.
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import _harness as harness  # noqa: E402


async def _setup(client: httpx.AsyncClient, users: list[str]) -> tuple[dict[str, str], str]:
    """Sign in, create a tenant and import the users through HTTP."""
    auth = await harness.admin_headers(client)
    tenant_id = await harness.create_tenant(client, auth, "Bench")
    started = time.perf_counter()
    imported = await client.post(
        f"/api/v1/admin/tenants/{tenant_id}/users/import",
        content=orjson.dumps({"users": [{"external_id": u} for u in users]}),
        headers={**auth, "Content-Type": "application/json"},
        timeout=120,
    )
    imported.raise_for_status()
    assert imported.json()["created"] == len(users), imported.text[:500]
    print(f"import of {len(users)} users through HTTP: {time.perf_counter() - started:.3f} s")
    return auth, tenant_id


async def _http_run(
    client: httpx.AsyncClient, auth: dict[str, str], tenant_id: str, body: bytes, n: int
) -> float:
    """One 10,000-entry bulk recharge with a new Idempotency-Key, timed from the client."""
    headers = {**auth, "Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex}
    url = f"/api/v1/admin/tenants/{tenant_id}/recharges/bulk"
    started = time.perf_counter()
    response = await client.post(url, content=body, headers=headers, timeout=120)
    elapsed = time.perf_counter() - started
    report = response.json()
    assert response.status_code == 200, response.text[:500]
    assert report["succeeded"] == n and report["status"] == "applied", report
    return elapsed


async def _naive_run(database_url: str, tenant_id: str, users: list[str], amount: int) -> float:
    """One UPDATE plus one INSERT per user, inside one transaction (the seed's loop)."""
    conn = await asyncpg.connect(database_url)
    try:
        issuance = await conn.fetchval(
            "SELECT id FROM accounts WHERE tenant_id = $1 AND kind = 'issuance'",
            uuid.UUID(tenant_id),
        )
        started = time.perf_counter()
        async with conn.transaction():
            for user in users:
                row = await conn.fetchrow(
                    "UPDATE accounts SET balance = balance + $1, updated_at = now() "
                    "WHERE user_id = (SELECT id FROM users WHERE tenant_id = $2 "
                    "AND external_id = $3) RETURNING id, balance, held",
                    amount, uuid.UUID(tenant_id), user,
                )  # fmt: skip
                await conn.execute(
                    "INSERT INTO ledger_entries (tenant_id, from_account_id, to_account_id, "
                    "amount, kind, reason, balance_after, held_after) "
                    "VALUES ($1, $2, $3, $4, 'recharge', 'naive', $5, $6)",
                    uuid.UUID(tenant_id), issuance, row["id"], amount, row["balance"], row["held"],
                )  # fmt: skip
            await conn.execute(
                "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
                amount * len(users), issuance,
            )  # fmt: skip
        return time.perf_counter() - started
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--naive-runs", type=int, default=5)
    args = parser.parse_args()

    scratch = f"swapmeter_bench_{os.getpid()}"
    async with harness.scratch_database(scratch) as database_url:
        server: subprocess.Popen[bytes] | None = None
        try:
            port = harness.free_port()
            server = harness.start_server(harness.service_env(database_url), port)
            await _run(args, database_url, server, port)
        finally:
            harness.stop(server)


async def _run(
    args: argparse.Namespace, database_url: str, server: subprocess.Popen[bytes], port: int
) -> None:
    users = [f"bench-user-{i:05d}" for i in range(args.users)]
    body = orjson.dumps({"entries": [{"user": u, "amount": 5} for u in users], "reason": "bench"})
    http_times: list[float] = []
    naive_times: list[float] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        await harness.wait_ready(client, server)
        auth, tenant_id = await _setup(client, users)
        # What autovacuum would do within a minute of a 10,000-row import: without
        # statistics the planner guesses at the new rows and the first runs pay for it.
        await harness.admin_sql(database_url, "ANALYZE")
        warm = await _http_run(client, auth, tenant_id, body, len(users))
        print(f"  http warm-up: {warm:.3f} s (not counted)")
        # Interleaved, so that both sides see the same background load.
        for run in range(max(args.runs, args.naive_runs)):
            if run < args.runs:
                http_times.append(await _http_run(client, auth, tenant_id, body, len(users)))
                print(f"  http run {run + 1}: {http_times[-1]:.3f} s")
            if run < args.naive_runs:
                naive_times.append(await _naive_run(database_url, tenant_id, users, 5))
                print(f"  naive run {run + 1}: {naive_times[-1]:.3f} s")

    http, naive = statistics.median(http_times), statistics.median(naive_times)
    print()
    print(f"users per batch:            {args.users}")
    print(f"HTTP bulk recharge, median: {http:.3f} s  (runs: {len(http_times)})")
    print(f"naive loop, median:         {naive:.3f} s  (runs: {len(naive_times)})")
    print(f"ratio naive / bulk:         {naive / http:.1f}x")
    print(f"os.cpu_count():             {os.cpu_count()}")
    print(f"targets: bulk <= 1.5 s: {'met' if http <= 1.5 else 'NOT met'}; "
          f">= 20x faster: {'met' if naive / http >= 20 else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
