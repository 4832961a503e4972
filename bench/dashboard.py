"""Dashboard benchmark: the time of every dashboard page on a large tenant (target: at most
150 ms each).

Run as ``.venv/bin/python bench/dashboard.py`` (``--users``, ``--entries``, ``--runs``;
``make bench-dashboard``). It creates a scratch database, serves the real app under
uvicorn on a real socket, creates a tenant through the API and seeds it in SQL with
``--users`` users and ``--entries`` ledger entries (``bench/_seed.py``, as
``bench/reports.py``), folds the usage rollups, then gives one user 20,000 entries of its
own (a deep ledger) and sends two bulk recharges through the API (one applied, one over
the approval threshold, waiting). It seeds ``--jobs`` jobs over the last 30 days (mixed
kinds and statuses, and 20,000 more of the heavy user), 5,000 anomaly flags (200 open)
and 50,000 audit records, in SQL too.

It signs in to the dashboard as the bootstrap admin (a platform admin: the pages with the
tenant chooser's list too) and times each page of ``PAGES``: one warm-up, then ``--runs``
GETs one after the other, each from request to the last byte over localhost. It prints
p50 and p95 per page, the CPU count and the load average, and drops the database.

A page builder adds a page with one line in ``PAGES``: a name and its path, where
``{tenant}``, ``{user}``, ``{cursor}``, ``{batch}``, ``{pending_batch}``, ``{job}``,
``{first}`` and ``{last}`` are
filled from the set-up (``Context``; add a field there for a new kind of object).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import _harness as harness  # noqa: E402
import _seed as seed  # noqa: E402

TARGET_MS = 150.0
HEAVY_USER = "user-000042"
HEAVY_ENTRIES = 20_000
HEAVY_JOBS = 20_000
FLAGS, OPEN_EVERY = 5_000, 25  # 200 open
AUDIT_RECORDS = 50_000
BATCH_USERS = 1_000

# (name, path): every dashboard page, timed in this order.
PAGES: tuple[tuple[str, str], ...] = (
    ("floor: the stylesheet, no page code", "/dashboard/static/dashboard.css"),
    ("overview, 30 days", "/dashboard?tenant={tenant}&period=30d"),
    ("users, first page", "/dashboard/users?tenant={tenant}"),
    ("users, search q=user-0042", "/dashboard/users?tenant={tenant}&q=user-0042"),
    ("users, sorted by -balance", "/dashboard/users?tenant={tenant}&sort=-balance"),
    ("users, sorted by -created_at", "/dashboard/users?tenant={tenant}&sort=-created_at"),
    ("user page", "/dashboard/users/{user}?tenant={tenant}"),
    ("user page, deep ledger page", "/dashboard/users/{user}?tenant={tenant}&ledger={cursor}"),
    ("bulk recharge form", "/dashboard/bulk-recharge?tenant={tenant}"),
    ("batch report (1,000 rows)", "/dashboard/bulk-recharge/batches/{batch}?tenant={tenant}"),
    ("approval queue", "/dashboard/bulk-recharge/approvals?tenant={tenant}"),
    ("pending batch", "/dashboard/bulk-recharge/batches/{pending_batch}?tenant={tenant}"),
    ("tenants, first page", "/dashboard/tenants"),
    ("tenant page", "/dashboard/tenants/{tenant}"),
    ("jobs, first page", "/dashboard/jobs?tenant={tenant}"),
    ("jobs, status=failed", "/dashboard/jobs?tenant={tenant}&status=failed"),
    ("jobs, status=failed, kind=video", "/dashboard/jobs?tenant={tenant}&status=failed&kind=video"),
    ("jobs of the heavy user", "/dashboard/jobs?tenant={tenant}&user={user}"),
    ("jobs, one day 10 days ago", "/dashboard/jobs?tenant={tenant}&from={day}&to={day}"),
    ("job page", "/dashboard/jobs/{job}?tenant={tenant}"),
    ("audit log", "/dashboard/audit?tenant={tenant}"),
    ("audit log, action=user.*", "/dashboard/audit?tenant={tenant}&action=user.*"),
    ("reports, 30 days", "/dashboard/audit/reports?tenant={tenant}&from={first}&to={last}"),
    ("flags, open", "/dashboard/flags?tenant={tenant}&status=open"),
    ("flags, all", "/dashboard/flags?tenant={tenant}"),
)  # fmt: skip


@dataclass(frozen=True)
class Context:
    """What the pages' paths name, made by the set-up."""

    tenant: str
    user: str
    cursor: str  # a ledger page's cursor, half-way down the user's history
    batch: str
    pending_batch: str
    job: str  # one of the heavy user's jobs
    first: str  # the reports' period: the last 30 UTC days
    last: str
    day: str  # a UTC day 10 days ago


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _deep_cursor(database_url: str, tenant_id: str, external_id: str) -> str:
    """An entry id half-way down the user's history: the ``ledger`` cursor of a deep page."""
    conn = await asyncpg.connect(database_url)
    try:
        return str(
            await conn.fetchval(
                "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY e.id) FROM ledger_entries e "
                "JOIN accounts a ON a.id = e.to_account_id JOIN users u ON u.id = a.user_id "
                "WHERE u.tenant_id = $1::uuid AND u.external_id = $2",
                tenant_id,
                external_id,
            )
        )
    finally:
        await conn.close()


async def _batches(
    client: httpx.AsyncClient, auth: dict[str, str], tenant_id: str
) -> tuple[str, str]:
    """One applied batch of 1,000 users (some unknown: failed rows on its report), then a
    threshold and one batch over it, waiting for approval."""
    base = f"/api/v1/admin/tenants/{tenant_id}"
    users = [f"user-{n:06d}" for n in range(BATCH_USERS - 10)] + [f"nobody-{n}" for n in range(10)]
    applied = await client.post(
        f"{base}/recharges/bulk", json={"users": users, "amount": 5}, headers=auth
    )
    applied.raise_for_status()
    (await client.patch(base, json={"approval_threshold": 1000}, headers=auth)).raise_for_status()
    pending = await client.post(
        f"{base}/recharges/bulk", json={"users": users[:500], "amount": 10}, headers=auth
    )
    pending.raise_for_status()
    assert pending.json()["status"] == "pending_approval"
    return applied.json()["batch_id"], pending.json()["batch_id"]


async def _sign_in(client: httpx.AsyncClient) -> None:
    form = await client.get("/dashboard/login")
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form.text)
    assert token is not None
    signed_in = await client.post(
        "/dashboard/login",
        data={"email": harness.ADMIN_EMAIL, "password": harness.ADMIN_PASSWORD,
              "csrf_token": token.group(1)},
    )  # fmt: skip
    assert signed_in.status_code == 303, signed_in.text


async def _timed(client: httpx.AsyncClient, path: str, runs: int) -> list[float]:
    (await client.get(path)).raise_for_status()  # the warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = await client.get(path)
        response.raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def _a_job(database_url: str, tenant_id: str, external_id: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        return str(
            await conn.fetchval(
                "SELECT j.id FROM jobs j JOIN users u ON u.id = j.user_id "
                "WHERE u.tenant_id = $1::uuid AND u.external_id = $2 "
                "ORDER BY j.created_at DESC LIMIT 1",
                tenant_id,
                external_id,
            )
        )
    finally:
        await conn.close()


async def _set_up(
    database_url: str, client: httpx.AsyncClient, users: int, entries: int, jobs: int
) -> Context:
    auth = await harness.admin_headers(client)
    tenant_id = await harness.create_tenant(client, auth, "Dashboard bench")
    seeded = await seed.seed(database_url, tenant_id, users, entries)
    print(f"set-up: {users:,} users and {entries:,} entries in {seeded:.1f} s (SQL)")
    await seed.fold(database_url)
    await seed.live_tail(database_url, tenant_id, users)
    await seed.heavy_user(database_url, tenant_id, HEAVY_USER, HEAVY_ENTRIES)
    batch, pending = await _batches(client, auth, tenant_id)
    cursor = await _deep_cursor(database_url, tenant_id, HEAVY_USER)
    took = await seed.jobs(database_url, tenant_id, users, jobs, HEAVY_USER, HEAVY_JOBS)
    print(f"set-up: {jobs + HEAVY_JOBS:,} jobs in {took:.1f} s (SQL)")
    await seed.flags(database_url, tenant_id, users, min(FLAGS, users), OPEN_EVERY)
    await seed.audit_records(database_url, tenant_id, AUDIT_RECORDS)
    today = datetime.now(UTC).date()
    return Context(
        tenant_id,
        quote(HEAVY_USER, safe=""),
        cursor,
        batch,
        pending,
        job=await _a_job(database_url, tenant_id, HEAVY_USER),
        first=(today - timedelta(days=29)).isoformat(),
        last=today.isoformat(),
        day=(today - timedelta(days=10)).isoformat(),
    )


async def main(users: int, entries: int, jobs: int, runs: int) -> None:
    port = harness.free_port()
    results: list[tuple[str, list[float]]] = []
    async with harness.scratch_database("swapmeter_bench_dashboard") as database_url:
        env = harness.service_env(database_url, jobs_housekeeping_seconds="3600")
        server = harness.start_server(env, port)
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=600
            ) as client:
                await harness.wait_ready(client, server)
                context = await _set_up(database_url, client, users, entries, jobs)
                await _sign_in(client)
                for name, path in PAGES:
                    results.append(
                        (name, await _timed(client, path.format(**asdict(context)), runs))
                    )
        finally:
            harness.stop(server)
    width = max(len(name) for name, _ in results)
    print(f"\n{'page':<{width}}  {'p50 ms':>7}  {'p95 ms':>7}  target {TARGET_MS:.0f} ms")
    for name, times in results:
        p95 = _pct(times, 0.95)
        flag = "" if p95 <= TARGET_MS else "  OVER"
        print(f"{name:<{width}}  {statistics.median(times):7.1f}  {p95:7.1f}{flag}")
    print(f"\n{runs} runs per page after a warm-up; os.cpu_count() = {os.cpu_count()}; "
          f"load average {harness.load_average()}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.users, args.entries, args.jobs, args.runs))
