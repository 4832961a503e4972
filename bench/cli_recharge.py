"""CLI recharge benchmark: ``swapmeter admin recharge`` of a 1,000,000-row CSV, then a run
killed at about half and resumed.

Run as ``.venv/bin/python bench/cli_recharge.py [--rows N]``. It creates a scratch database
(bench/_harness.py), serves the real app under uvicorn on a real socket, creates a tenant
through the admin API and its N users straight in SQL (COPY of the users, then one
INSERT ... SELECT of their accounts: the set-up, not what is measured, and several times
faster than N/10,000 calls of /users/import), writes a ``user,amount`` CSV of them, then:

1. runs the CLI (a subprocess, as an operator would, its progress bar on stderr) on the
   file and prints its rows/s and total seconds (target: 1,000,000 rows in <= 60 s), and
   where the time went: the CLI's own CSV checks and JSON encoding (timed here on the same
   file), and the CPU seconds of the CLI, the API process and the database backends;
2. runs the same file as a new recharge (``--run-name second``), sends it SIGINT once
   about half of its chunks have landed, runs it again, and checks that every user was
   credited exactly once per run: each balance is 2 x amount, the sum 2 x N x amount.

It prints the machine's load average, and drops the scratch database.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import _harness as harness  # noqa: E402

AMOUNT = 5


async def _users_by_sql(database_url: str, tenant_id: str, n: int) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(database_url)
    try:
        tenant = uuid.UUID(tenant_id)
        async with conn.transaction():
            await conn.copy_records_to_table(
                "users",
                records=((tenant, f"user{i:07d}") for i in range(n)),
                columns=["tenant_id", "external_id"],
            )
            await conn.execute(
                "INSERT INTO accounts (tenant_id, user_id, kind) "
                "SELECT tenant_id, id, 'user' FROM users WHERE tenant_id = $1 ORDER BY id",
                tenant,
            )
        await conn.execute("ANALYZE users; ANALYZE accounts")
    finally:
        await conn.close()
    return time.perf_counter() - started


def _write_csv(path: Path, n: int) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user", "amount"])
        writer.writerows((f"user{i:07d}", AMOUNT) for i in range(n))


def _client_split(path: Path, chunk_size: int) -> dict[str, float]:
    """The CLI's own work on this file, timed in this process: reading and checking the
    rows, and encoding the chunks' JSON bodies."""
    from admin.cli import chunks, csvfile

    started = time.perf_counter()
    rows = csvfile.check_recharge(csvfile.read(path), None)
    parsed = time.perf_counter()
    for chunk in chunks.split(len(rows.users), chunk_size):
        users = rows.users[chunk.start : chunk.end]
        amounts = rows.amounts[chunk.start : chunk.end]
        orjson.dumps(
            {"entries": [{"user": u, "amount": a} for u, a in zip(users, amounts, strict=True)]}
        )
    encoded = time.perf_counter()
    return {"csv read + checks": parsed - started, "JSON bodies": encoded - parsed}


async def _backend_pids(database_url: str, name: str) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


async def _count(database_url: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchrow(sql, *args)
    finally:
        await conn.close()


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "admin", *args],
        cwd=harness.REPO,
        env=env,
        stdout=subprocess.PIPE,
    )


async def _run(args: argparse.Namespace, database_url: str, name: str) -> None:
    port = harness.free_port()
    server = harness.start_server(harness.service_env(database_url), port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            await harness.wait_ready(client, server)
            auth = await harness.admin_headers(client)
            tenant_id = await harness.create_tenant(client, auth, "CLI bench")
        setup = await _users_by_sql(database_url, tenant_id, args.rows)
        print(f"set-up: {args.rows:,} users by COPY in {setup:.1f} s")
        folder = Path(tempfile.mkdtemp(prefix="swapmeter-cli-bench-"))
        path = folder / "recharge.csv"
        _write_csv(path, args.rows)
        print(f"CSV: {path} ({path.stat().st_size / 1e6:.1f} MB)")
        env = {
            **os.environ,
            "SWAPMETER_URL": base,
            "SWAPMETER_ADMIN_TOKEN": auth["Authorization"].split()[1],
            "SWAPMETER_CONFIG_DIR": str(folder),
        }
        common = [
            "recharge", "--tenant", tenant_id, "--csv", str(path), "--json",
            "--chunk-size", str(args.chunk_size), "--parallel", str(args.parallel),
        ]  # fmt: skip

        # 1. The timed run.
        pids = {"api": server.pid, "db": await _backend_pids(database_url, name)}
        before = harness.cpu_seconds(pids)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        cli = _cli(common, env)
        out, _ = cli.communicate()
        wall = time.perf_counter() - started
        pids["db"] = await _backend_pids(database_url, name)
        after = harness.cpu_seconds(pids)
        waited = resource.getrusage(resource.RUSAGE_CHILDREN)  # the CLI, once waited for
        cli_cpu = (waited.ru_utime + waited.ru_stime) - (children.ru_utime + children.ru_stime)
        summary = orjson.loads(out)
        assert cli.returncode == 0, summary
        assert summary["applied"] == args.rows, summary
        print(
            f"\nrecharge of {args.rows:,} rows, --parallel {args.parallel}: {wall:.1f} s wall, "
            f"{args.rows / wall:,.0f} rows/s (CLI's own figure: {summary['seconds']:.1f} s, "
            f"{summary['rows_per_second']:,} rows/s; target <= 60 s for 1,000,000)"
        )
        split = _client_split(path, args.chunk_size)
        cpu = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ("api", "db")}
        print("where the time goes:")
        for what, seconds in split.items():
            print(f"  CLI {what:<20} {seconds:6.1f} s (wall, timed alone in this process)")
        print(f"  API process CPU          {cpu['api']:6.1f} s (JSON decode, checks, driver)")
        print(f"  database backends CPU    {cpu['db']:6.1f} s (SQL; backends alive at the end)")
        print(f"  CLI process CPU, in all  {cli_cpu:6.1f} s (start-up, checks, JSON, HTTP)")
        totals = await _count(
            database_url,
            "SELECT sum(balance) AS s, count(*) FILTER (WHERE balance <> $2) AS odd "
            "FROM accounts WHERE tenant_id = $1 AND kind = 'user'",
            uuid.UUID(tenant_id),
            AMOUNT,
        )
        assert totals["s"] == args.rows * AMOUNT and totals["odd"] == 0, dict(totals)
        print(f"check: every user credited once ({int(totals['s']):,} Tokens)")

        # 2. The same file as a new recharge, killed at about half, then run again.
        second = [*common, "--run-name", "second"]
        chunks = summary["chunks"]
        batches_before = (
            await _count(
                database_url,
                "SELECT count(*) AS n FROM recharge_batches WHERE tenant_id = $1",
                uuid.UUID(tenant_id),
            )
        )["n"]
        cli = _cli(second, env)
        while True:
            landed = (
                await _count(
                    database_url,
                    "SELECT count(*) AS n FROM recharge_batches WHERE tenant_id = $1",
                    uuid.UUID(tenant_id),
                )
            )["n"] - batches_before
            if landed >= max(1, chunks // 2) or cli.poll() is not None:
                break
            await asyncio.sleep(0.05)
        cli.send_signal(signal.SIGINT)
        cli.communicate()
        print(f"\nsecond run: SIGINT after {landed} of {chunks} chunks (exit {cli.returncode})")
        started = time.perf_counter()
        cli = _cli(second, env)
        out, _ = cli.communicate()
        resumed = orjson.loads(out)
        assert cli.returncode == 0, resumed
        print(
            f"run again: {resumed['chunks_replayed']} chunks replayed, "
            f"{resumed['chunks'] - resumed['chunks_replayed']} sent, "
            f"{time.perf_counter() - started:.1f} s"
        )
        totals = await _count(
            database_url,
            "SELECT sum(balance) AS s, count(*) FILTER (WHERE balance <> $2) AS odd "
            "FROM accounts WHERE tenant_id = $1 AND kind = 'user'",
            uuid.UUID(tenant_id),
            2 * AMOUNT,
        )
        assert totals["s"] == 2 * args.rows * AMOUNT and totals["odd"] == 0, dict(totals)
        print(f"check: every user credited exactly once per run ({int(totals['s']):,} Tokens)")
        path.unlink()
    finally:
        harness.stop(server)
    print(f"CPUs: {os.cpu_count()}, load average (1, 5, 15 min): {harness.load_average()}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    # Two chunks in flight let the CLI, the API and the database overlap (200,000 rows on
    # the shared 2-core machine: 12.7 s one at a time, 8.9 s two at a time).
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    print(f"load average before (1, 5, 15 min): {harness.load_average()}")
    name = f"swapmeter_bench_cli_{os.getpid()}"
    async with harness.scratch_database(name) as database_url:
        await _run(args, database_url, name)


if __name__ == "__main__":
    asyncio.run(main())
