"""Swap API benchmark: end-to-end image latency against the engine, metered throughput.

Run as ``.venv/bin/python bench/api.py``. On a scratch database (created, migrated and
dropped again) it runs the production shape: the API under uvicorn (one process, as
``swapmeter api``) and a separate ``swapmeter worker`` process, over real sockets, real
PostgreSQL and real Redis. Tenants, users, Tokens and API keys are made through the
admin API; every swap is an ordinary ``POST /api/v1/swap-face`` with JSON and base64
inputs, answered synchronously with the result as base64 (the default), sent by an aiohttp
client (``swap_client``: its C parser keeps the client's own CPU out of the figures).

1. Latency: obama.jpg onto obama-720p.jpg, one request at a time (concurrency 1) and
   with 8 clients, p50 and p95 measured by the client (request sent to answer read); in
   the same run, interleaved with the concurrency-1 requests, the median of
   ``Engine.swap_image`` on the same pair in this process (the worker's own engine
   factory and options), run on a thread of its own as the worker runs it. (On the main
   thread it is several ms slower here: glibc gives big frame buffers back to the system
   after each run on the main heap, and faults them in again on the next.) Overhead =
   HTTP p50 / engine median - 1 (target <= 0.25): what the API, metering and queue add
   to the engine's time; also printed in milliseconds, beside the engine time the worker
   reports in those very answers (result.duration). The floor splits it: the same
   requests, interleaved, to bench/_floor_app.py, which runs the engine inside its own
   uvicorn + FastAPI process and does nothing else, show what HTTP, JSON and base64
   alone add; the rest is SwapMeter's checks, metering and queue.
   The worker runs one job at a time (``--latency-worker-concurrency``), so at
   concurrency 8 requests queue behind each other and p50 is about 8 engine times: that
   row shows queueing, not overhead.
   Beside it, what one database transaction (SELECT 1 in a session) costs this process
   right after an engine run and then at once again: the machine's own share of the
   overhead, since every process on a swap's path waits while the engine runs.
2. Throughput with the no-op swapper (SWAPMETER_JOBS_SWAPPER=noop, the target returned
   unchanged): a closed loop of ``--clients`` clients (keep-alive connections) for
   ``--seconds`` per run, (a) every request on one hot account, (b) spread over
   ``--accounts`` accounts (one key each), against an API process with metering on and,
   on the same database and worker, one with SWAPMETER_JOBS_METERING=false: ratios
   metered / unmetered for the same key pattern (target >= 0.5). Runs of the four kinds
   alternate so that all see the same background load; the median run of each counts.

API keys get a rate limit of 100,000 requests/s and the tenant cap on concurrent jobs is
raised to the worker's concurrency, so that neither limit shapes the figures; any answer
but 200 is counted and makes the script fail.

The machine is shared: the load average is printed next to the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import orjson

BENCH = Path(__file__).resolve().parent
# The repository first: bench/inference.py must not shadow the inference package.
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import _harness as harness  # noqa: E402

FACES = harness.REPO.parent / "shared" / "media" / "faces"
KEY_RATE = 100_000  # the most a key may be given: far above what this machine can serve
HOT_TOKENS = 10_000_000
SPREAD_TOKENS = 100_000


# -- setup through the admin API ---------------------------------------------------------


@dataclass
class Tenant:
    id: str
    keys: list[str]  # one per user, in user order


async def make_tenant(
    client: httpx.AsyncClient, auth: dict[str, str], users: int, tokens: int, name: str
) -> Tenant:
    """A tenant, ``users`` users each recharged with ``tokens`` and given one API key."""
    tenant_id = await harness.create_tenant(client, auth, name)
    base = f"/api/v1/admin/tenants/{tenant_id}"
    external = [f"{name}-{i:05d}" for i in range(users)]
    imported = await client.post(
        f"{base}/users/import", json={"users": [{"external_id": e} for e in external]},
        headers=auth, timeout=120,
    )  # fmt: skip
    imported.raise_for_status()
    recharge = await client.post(
        f"{base}/recharges/bulk", json={"users": external, "amount": tokens, "reason": "bench"},
        headers=auth, timeout=120,
    )  # fmt: skip
    assert recharge.status_code == 200 and recharge.json()["status"] == "applied", recharge.text
    semaphore = asyncio.Semaphore(8)

    async def key_for(external_id: str) -> str:
        async with semaphore:
            response = await client.post(
                f"{base}/users/{external_id}/api-keys",
                json={"name": "bench", "rate_limit_per_second": KEY_RATE},
                headers=auth,
            )
        assert response.status_code == 201, response.text
        return str(response.json()["key"])

    keys = await asyncio.gather(*(key_for(e) for e in external))
    return Tenant(tenant_id, list(keys))


def swap_body(source: bytes, target: bytes) -> bytes:
    return orjson.dumps(
        {"source": base64.b64encode(source).decode(), "target": base64.b64encode(target).decode()}
    )


# -- the load ---------------------------------------------------------------------------------


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process kind

    @property
    def ok(self) -> int:
        return self.statuses[200]

    @property
    def rate(self) -> float:
        return self.ok / self.wall if self.wall else 0.0

    def merge(self, other: Run) -> None:
        self.latencies += other.latencies
        self.statuses.update(other.statuses)
        self.errors += other.errors
        self.wall += other.wall


def swap_client(port: int, connections: int) -> aiohttp.ClientSession:
    """The client of the measured swaps: aiohttp, whose HTTP parser is C. A 720p swap
    sends 650 kB and reads 280 kB; httpx (pure Python) spends about 2.5 ms of this
    machine's CPU on that per request, which would count as API overhead."""
    return aiohttp.ClientSession(
        base_url=f"http://127.0.0.1:{port}",
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=120),
    )


async def swap(
    client: aiohttp.ClientSession, key: str, body: bytes, run: Run, check: Any = None
) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    started = time.perf_counter()
    async with client.post("/api/v1/swap-face", data=body, headers=headers) as response:
        content = await response.read()
    elapsed = time.perf_counter() - started
    run.statuses[response.status] += 1
    if response.status != 200:
        run.errors.append(f"{response.status} {content[:300]!r}")
        return
    run.latencies.append(elapsed)
    if check is not None:
        check(orjson.loads(content))


async def closed_loop(
    client: aiohttp.ClientSession,
    keys: list[str],
    body: bytes,
    *,
    clients: int,
    seconds: float | None = None,
    requests: int | None = None,
    check: Any = None,
) -> Run:
    """``clients`` callers, each sending its next request as soon as its last one is
    answered, for ``seconds`` or until ``requests`` were sent in all. Caller i uses keys
    i, i + clients, ... in turn."""
    run = Run()
    deadline = time.perf_counter() + seconds if seconds is not None else None
    sent = 0

    async def caller(i: int) -> None:
        nonlocal sent
        mine = keys[i % len(keys) :: clients] or keys
        n = 0
        while True:
            if deadline is not None and time.perf_counter() >= deadline:
                return
            if requests is not None:
                if sent >= requests:
                    return
                sent += 1
            await swap(client, mine[n % len(mine)], body, run, check)
            n += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(clients)))
    run.wall = time.perf_counter() - started
    return run


def fail_on_errors(label: str, run: Run) -> None:
    unexpected = {s: n for s, n in run.statuses.items() if s != 200}
    if unexpected:
        print(f"\n{label}: unexpected answers {unexpected}; first: {run.errors[:3]}")
        raise SystemExit(1)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- 1. latency against the engine ---------------------------------------------------------


@dataclass
class LatencyFigures:
    engine_median: float
    engine_runs: int
    c1: Run
    c8: Run
    # One database transaction from this process: right after an engine run, and at once
    # again after that one (see print_latency).
    after_engine_tx: float
    back_to_back_tx: float
    # The engine time the worker reports in each concurrency-1 answer (result.duration,
    # the sum of its stages): that very request's swap, in the worker process.
    worker_engine_median: float
    # The engine on this process's main thread instead of a thread of its own.
    main_thread_median: float
    # The same requests to bench/_floor_app.py: HTTP with nothing else (concurrency 1),
    # and the engine time that app reports in its answers.
    floor: Run
    floor_engine_median: float


def check_swapped(answer: dict[str, Any]) -> None:
    assert answer["tokens_charged"] == 1, answer
    assert answer["result"]["faces_swapped"] >= 1, {**answer, "result": "..."}


async def bench_latency(args: argparse.Namespace, database_url: str, data_dir: Path) -> Any:
    from sqlalchemy import text

    from app.core.db import Database
    from app.core.settings import Settings
    from app.jobs.runner import process_engine

    source = (FACES / "obama.jpg").read_bytes()
    target = (FACES / "obama-720p.jpg").read_bytes()
    body = swap_body(source, target)
    env = harness.service_env(
        database_url,
        data_dir=str(data_dir),
        jobs_swapper="engine",
        jobs_inprocess_worker="false",
    )
    port, floor_port = harness.free_port(), harness.free_port()
    server = harness.start_server(env, port)
    worker = harness.start_worker(env, concurrency=args.latency_worker_concurrency)
    floor = harness.start_server(env, floor_port, "bench._floor_app:app")
    db = Database(database_url, pool_size=1)
    on_a_thread = ThreadPoolExecutor(1)  # where the worker runs the engine
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as admin,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{floor_port}", timeout=120) as probe,
            swap_client(port, 16) as client,
            swap_client(floor_port, 1) as floor_client,
        ):
            await harness.wait_ready(admin, server)
            await harness.wait_ready(probe, floor)
            auth = await harness.admin_headers(admin)
            tenant = await make_tenant(admin, auth, 1, 100_000, "latency")
            key = tenant.keys[0]

            # The engine as the worker builds it (same settings, same cache), same options.
            engine = process_engine(Settings(_env_file=None))  # type: ignore[call-arg]

            def engine_once() -> float:
                started = time.perf_counter()
                result = engine.swap_image(
                    source, target, faces="largest", output_format="jpg",
                    enhance=False, watermark=True,
                )  # fmt: skip
                elapsed = time.perf_counter() - started
                assert result.faces_swapped >= 1
                return elapsed

            async def transaction() -> float:
                started = time.perf_counter()
                async with db.session() as session:
                    await session.execute(text("SELECT 1"))
                return time.perf_counter() - started

            after_engine: list[float] = []
            back_to_back: list[float] = []
            main_thread: list[float] = []

            async def engine_then_transactions() -> float:
                loop = asyncio.get_running_loop()
                elapsed = await loop.run_in_executor(on_a_thread, engine_once)
                after_engine.append(await transaction())
                back_to_back.append(await transaction())
                main_thread.append(engine_once())
                return elapsed

            # Warm-up, not counted: the worker loads its models on its first job.
            for _ in range(args.warmup):
                await engine_then_transactions()
                for to in (client, floor_client):
                    fail_on_errors("warm-up", await closed_loop(to, [key], body, clients=1,
                                                                requests=1))  # fmt: skip
            del after_engine[:], back_to_back[:], main_thread[:]
            engine_times: list[float] = []
            worker_engine: list[float] = []

            floor_engine: list[float] = []

            def noting(into: list[float]) -> Any:
                """A check that also keeps the engine time each answer reports."""

                def check(answer: dict[str, Any]) -> None:
                    check_swapped(answer)
                    into.append(float(answer["result"]["duration"]))

                return check

            c1, bare = Run(), Run()
            block = max(1, args.latency_requests // args.latency_rounds)
            for _ in range(args.latency_rounds):  # interleaved: same background load
                engine_times += [await engine_then_transactions() for _ in range(block)]
                c1.merge(await closed_loop(client, [key], body, clients=1, requests=block,
                                           check=noting(worker_engine)))  # fmt: skip
                bare.merge(await closed_loop(floor_client, [key], body, clients=1, requests=block,
                                             check=noting(floor_engine)))  # fmt: skip
            fail_on_errors("latency, concurrency 1", c1)
            fail_on_errors("latency, floor", bare)
            c8 = await closed_loop(
                client, [key], body, clients=8, requests=args.latency_requests_c8,
                check=check_swapped,
            )  # fmt: skip
            fail_on_errors("latency, concurrency 8", c8)
    finally:
        await db.dispose()
        on_a_thread.shutdown()
        harness.stop(floor)
        harness.stop(worker)
        harness.stop(server)
    return LatencyFigures(
        statistics.median(engine_times),
        len(engine_times),
        c1,
        c8,
        statistics.median(after_engine),
        statistics.median(back_to_back),
        statistics.median(worker_engine),
        statistics.median(main_thread),
        bare,
        statistics.median(floor_engine),
    )


# -- 2. metered throughput ------------------------------------------------------------------


@dataclass
class Kind:
    """One kind of throughput run: which API process, which keys, what each swap costs."""

    server: str  # metered | unmetered
    keys: list[str]
    tokens: int  # tokens_charged of every answer

    def check(self, answer: dict[str, Any]) -> None:
        assert answer["tokens_charged"] == self.tokens, {**answer, "result": "..."}


async def bench_throughput(args: argparse.Namespace, database_url: str, data_dir: Path) -> Any:
    small = (FACES / "obama_small.jpg").read_bytes()
    body = swap_body(small, small)
    common = {
        "data_dir": str(data_dir),
        "jobs_swapper": "noop",
        "jobs_inprocess_worker": "false",
        "max_concurrent_jobs_per_tenant": str(max(args.clients, args.worker_concurrency)),
    }
    metered_env = harness.service_env(database_url, jobs_metering="true", **common)
    # Same secret: one worker and signed results serve both API processes.
    unmetered_env = {**metered_env, "SWAPMETER_JOBS_METERING": "false"}
    ports = {"metered": harness.free_port(), "unmetered": harness.free_port()}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        servers = {
            "metered": harness.start_server(metered_env, ports["metered"]),
            "unmetered": harness.start_server(unmetered_env, ports["unmetered"]),
        }
        processes += servers.values()
        workers = [
            harness.start_worker(metered_env, concurrency=args.worker_concurrency)
            for _ in range(args.workers)
        ]
        processes += workers
        clients = {name: swap_client(port, args.clients) for name, port in ports.items()}
        admin = httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['metered']}", timeout=120)
        try:
            await harness.wait_ready(admin, servers["metered"])
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{ports['unmetered']}"
            ) as probe:
                await harness.wait_ready(probe, servers["unmetered"])
            auth = await harness.admin_headers(admin)
            started = time.perf_counter()
            hot = await make_tenant(admin, auth, 1, HOT_TOKENS, "hot")
            spread = await make_tenant(admin, auth, args.accounts, SPREAD_TOKENS, "spread")
            print(
                f"  setup: 2 tenants, {args.accounts + 1} users with Tokens and keys "
                f"through the admin API in {time.perf_counter() - started:.1f} s"
            )
            await harness.admin_sql(database_url, "ANALYZE")
            kinds = {
                "a. metered, 1 hot account": Kind("metered", hot.keys, 1),
                f"b. metered, {args.accounts} accounts": Kind("metered", spread.keys, 1),
                "c. unmetered, 1 account": Kind("unmetered", hot.keys, 0),
                f"d. unmetered, {args.accounts} accounts": Kind("unmetered", spread.keys, 0),
            }
            charged = {"hot": 0, "spread": 0}

            async def one_run(name: str, seconds: float) -> Run:
                kind = kinds[name]
                pids = {"API": servers[kind.server].pid, "worker": [w.pid for w in workers]}
                before = harness.cpu_seconds(pids)
                run = await closed_loop(
                    clients[kind.server], kind.keys, body, clients=args.clients,
                    seconds=seconds, check=kind.check,
                )  # fmt: skip
                after = harness.cpu_seconds(pids)
                run.cpu = {k: after[k] - before[k] for k in before.keys() & after.keys()}
                fail_on_errors(name, run)
                if kind.tokens:
                    charged["hot" if kind.keys is hot.keys else "spread"] += run.ok
                return run

            for name in kinds:  # warm-up, not counted
                await one_run(name, args.warmup_seconds)
            runs: dict[str, list[Run]] = {name: [] for name in kinds}
            for round_ in range(args.rounds):
                for name in kinds:  # alternating: every kind sees the same background load
                    run = await one_run(name, args.seconds)
                    runs[name].append(run)
                    print(
                        f"  round {round_ + 1} {name:<28} {run.rate:7.1f} req/s  "
                        f"p50 {pct(run.latencies, 0.5) * 1000:6.1f} ms  "
                        f"(load {harness.load_average()})"
                    )
            await check_charges(admin, auth, database_url, hot, spread, charged)
        finally:
            await admin.aclose()
            for client in clients.values():
                await client.close()
    finally:
        for process in processes:
            harness.stop(process)
    return runs


async def check_charges(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    database_url: str,
    hot: Tenant,
    spread: Tenant,
    charged: dict[str, int],
) -> None:
    """Every metered 200 took exactly one Token, unmetered ones none, nothing is left
    held, and both tenants' ledgers verify."""
    balance = (
        await client.get("/api/v1/balance", headers={"Authorization": f"Bearer {hot.keys[0]}"})
    ).json()
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT sum(balance) AS balance, sum(held) AS held FROM accounts "
            "WHERE tenant_id = $1 AND user_id IS NOT NULL",
            uuid.UUID(spread.id),
        )
    finally:
        await conn.close()
    expected_spread = SPREAD_TOKENS * len(spread.keys) - charged["spread"]
    problems = []
    if (balance["balance"], balance["held"]) != (HOT_TOKENS - charged["hot"], 0):
        problems.append(f"hot account {balance}, expected {HOT_TOKENS - charged['hot']}")
    if (row["balance"], row["held"]) != (expected_spread, 0):
        problems.append(f"spread accounts {dict(row)}, expected {expected_spread}")
    for tenant in (hot, spread):
        report = await client.get(
            "/api/v1/admin/ledger/verify", params={"tenant_id": tenant.id}, headers=auth
        )
        if report.status_code != 200 or report.json().get("ok") is not True:
            problems.append(f"ledger of {tenant.id}: {report.text[:300]}")
    if problems:
        print("\nbilling check FAILED: " + "; ".join(problems))
        raise SystemExit(1)
    print(
        f"  billing check: {charged['hot'] + charged['spread']} metered swaps charged one "
        "Token each, unmetered ones nothing, nothing left held, ledgers verify"
    )


# -- report ----------------------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def print_latency(figures: LatencyFigures, worker_concurrency: int) -> float:
    engine = figures.engine_median
    print(f"\n1. image swap latency, obama.jpg onto obama-720p.jpg (load {harness.load_average()})")
    print(f"  engine, in-process Engine.swap_image on a thread, as the worker runs it: median "
          f"{engine * 1000:7.1f} ms  (runs: {figures.engine_runs}; on the main thread "
          f"{figures.main_thread_median * 1000:.1f} ms)")  # fmt: skip
    for label, run in (("concurrency 1", figures.c1), ("concurrency 8", figures.c8)):
        p50, p95 = pct(run.latencies, 0.5), pct(run.latencies, 0.95)
        print(f"  HTTP, {label}: p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  "
              f"({run.ok} requests, {run.rate:.2f} images/s)")  # fmt: skip
    p50 = pct(figures.c1.latencies, 0.5)
    overhead = p50 / engine - 1
    print(f"  overhead, HTTP p50 (concurrency 1) / engine median - 1: {overhead:+.3f}"
          f"  (target <= 0.25: {'met' if overhead <= 0.25 else 'NOT met'})")  # fmt: skip
    print(f"  in milliseconds: HTTP p50 - engine median = {(p50 - engine) * 1000:.1f} ms; "
          f"the worker's own engine time in those answers (result.duration): median "
          f"{figures.worker_engine_median * 1000:.1f} ms")  # fmt: skip
    floor, floor_engine = pct(figures.floor.latencies, 0.5), figures.floor_engine_median
    print(f"  floor, the same requests to bench/_floor_app.py (the engine inside the API "
          f"process; no key, Tokens, database, Redis, queue): p50 {floor * 1000:.1f} ms, its "
          f"own engine time {floor_engine * 1000:.1f} ms: HTTP with the JSON and base64 adds "
          f"{(floor - floor_engine) * 1000:.1f} ms there; SwapMeter's p50 is "
          f"{(p50 - floor) * 1000:.1f} ms over the floor's")  # fmt: skip
    print(
        "  (the same engine runs at different speeds in different processes of this VM: "
        "compare each p50 with the engine time of its own process too)"
    )
    print(f"  (one API process, one `swapmeter worker --concurrency {worker_concurrency}`; "
          f"at concurrency 8 requests queue for the worker)")  # fmt: skip
    print(f"  this machine: one database transaction from Python (SELECT 1, as the services "
          f"run theirs) takes {figures.back_to_back_tx * 1000:.2f} ms back-to-back and "
          f"{figures.after_engine_tx * 1000:.2f} ms right after an engine run")  # fmt: skip
    print(
        "  (on this VM code that has waited runs its first steps several times slower; every "
        "process on a swap's path, API, worker, database, client, waits while the engine runs)"
    )
    return overhead


def print_throughput(runs: dict[str, list[Run]], args: argparse.Namespace) -> dict[str, float]:
    print(f"\n2. metered throughput, no-op swapper, {args.clients} clients, {args.seconds:g} s"
          f" runs, median of {args.rounds} (load {harness.load_average()})")  # fmt: skip
    rates = {}
    for name, kind_runs in runs.items():
        run = median_run(kind_runs)
        rates[name] = run.rate
        cpu = "".join(f", {k} {v / run.ok * 1000:.1f}" for k, v in sorted(run.cpu.items()))
        print(f"  {name:<28} {run.rate:7.1f} req/s  p50 {pct(run.latencies, 0.5) * 1000:6.1f} ms"
              f"  p95 {pct(run.latencies, 0.95) * 1000:6.1f} ms  ({run.ok} x 200"
              f"{'; CPU ms per request' + cpu if cpu else ''})")  # fmt: skip
    names = list(runs)
    ratios = {
        "a / c": rates[names[0]] / rates[names[2]],
        "b / d": rates[names[1]] / rates[names[3]],
    }
    for runs_compared, ratio in ratios.items():
        print(f"  ratio metered / unmetered ({runs_compared}): {ratio:.2f}"
              f"  (target >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'})")  # fmt: skip
    print(f"  ({args.workers} `swapmeter worker --concurrency {args.worker_concurrency}` "
          f"process(es), one API process per metering mode)")  # fmt: skip
    return ratios


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-requests", type=int, default=60, help="at concurrency 1")
    parser.add_argument("--latency-rounds", type=int, default=6)
    parser.add_argument("--latency-requests-c8", type=int, default=48)
    parser.add_argument("--latency-worker-concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--worker-concurrency", type=int, default=16)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()

    print(f"os.cpu_count(): {os.cpu_count()}   load average at start: {harness.load_average()}")
    latency = throughput = None
    with tempfile.TemporaryDirectory(prefix="swapmeter-bench-api-") as tmp:
        async with harness.scratch_database(f"swapmeter_bench_api_{os.getpid()}") as url:
            if not args.skip_latency:
                latency = await bench_latency(args, url, Path(tmp) / "latency")
            if not args.skip_throughput:
                throughput = await bench_throughput(args, url, Path(tmp) / "throughput")

    print(f"\nos.cpu_count(): {os.cpu_count()}   load average at end: {harness.load_average()}")
    if latency is not None:
        print_latency(latency, args.latency_worker_concurrency)
    if throughput is not None:
        print_throughput(throughput, args)


if __name__ == "__main__":
    asyncio.run(main())
