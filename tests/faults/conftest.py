"""Fault tests: real `swapmeter api` and `swapmeter worker` processes on a PostgreSQL and a
Redis of their own, which the tests stop, restart and kill under load.

The servers are embedded ones (``app.embedded``) started under a temporary folder on free
ports, never the machine's shared ones, and stopped at the end even when a test fails.
Every swap is sent with an Idempotency-Key; a request that got no answer, or a 503, is
retried with its key (as docs/api.md tells clients to), and then the ledger is checked:
every job is named by an answer, every 200 was charged exactly once, no hold is left
open, and the ledger verifies.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.core.db import Database
from app.embedded import EmbeddedPostgres, EmbeddedRedis, ensure_database
from app.migrate import upgrade_to_head
from tests.conftest import MODELS_DIR, REPO, TEST_JWT_SECRET
from tests.jobs.conftest import free_port

ROOT = {"email": "root@faults.test", "password": "faults-root-password-1"}
LEASE_S = 2.0
# What a client does with an answer it cannot use: retry with the same key.
RETRYABLE = (503,)


@dataclass
class Servers:
    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    database_url: str

    async def restart_postgres(self, down_s: float) -> None:
        """Stop PostgreSQL (fast: every connection dropped), keep it down, start it."""
        await asyncio.to_thread(self.pg.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.pg.start)

    async def restart_redis(self, down_s: float) -> None:
        await asyncio.to_thread(self.redis.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.redis.start)


@pytest.fixture(scope="session")
def fault_servers() -> Iterator[Servers]:
    # Not under pytest's own temporary folder: another pytest run of the machine's user
    # makes that private again (0700), and PostgreSQL runs as a user of its own.
    root = Path(tempfile.mkdtemp(prefix="swapmeter-faults-"))
    # Free ports of our own, never the embedded defaults another checkout may be using.
    (root / "postgres.port").write_text(str(free_port()))
    (root / "redis.port").write_text(str(free_port()))
    pg, redis = EmbeddedPostgres(root), EmbeddedRedis(root)
    try:
        pg.start()
        redis.start()
        url = ensure_database(pg.url(), "swapmeter_faults")
        upgrade_to_head(url)
        yield Servers(pg, redis, url)
    finally:
        redis.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def fault_db(fault_servers: Servers) -> AsyncIterator[Database]:
    """The test's own view of the database, for checking the ledger."""
    database = Database(fault_servers.database_url, pool_size=2, max_overflow=2)
    yield database
    await database.dispose()


class Stack:
    """`swapmeter api` and `swapmeter worker` processes on the fault servers, killed at the
    end of the test whatever happened."""

    def __init__(self, servers: Servers, tmp: Path, **settings: str) -> None:
        self.tmp = tmp
        self.env = {
            **os.environ,
            "SWAPMETER_ENVIRONMENT": "test",
            "SWAPMETER_DATABASE_URL": servers.database_url,
            "SWAPMETER_REDIS_URL": servers.redis.url,
            "SWAPMETER_JWT_SECRET": TEST_JWT_SECRET,
            "SWAPMETER_DATA_DIR": str(tmp),
            "SWAPMETER_RESULTS_DIR": str(tmp / "results"),
            "SWAPMETER_MODELS_DIR": str(MODELS_DIR),
            "SWAPMETER_BOOTSTRAP_ADMIN_EMAIL": ROOT["email"],
            "SWAPMETER_BOOTSTRAP_ADMIN_PASSWORD": ROOT["password"],
            "SWAPMETER_JOBS_SWAPPER": "noop",
            "SWAPMETER_JOBS_LEASE_SECONDS": str(LEASE_S),
            "SWAPMETER_JOBS_POLL_SECONDS": "0.5",
            "SWAPMETER_JOBS_HOUSEKEEPING_SECONDS": "0.5",
            "SWAPMETER_JOBS_IMAGE_WAIT_SECONDS": "20",
            "SWAPMETER_LOG_LEVEL": "WARNING",
            **{f"SWAPMETER_{k.upper()}": v for k, v in settings.items()},
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def _start(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / log_name).open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append(process)
        return process

    async def start_api(self) -> tuple[subprocess.Popen[bytes], str]:
        """An API process, once ready; and its base URL."""
        port = free_port()
        process = self._start(
            ["api", "--host", "127.0.0.1", "--port", str(port)], f"api-{port}.log"
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            while True:
                assert process.poll() is None, f"the API exited: see {self.tmp}/api-{port}.log"
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return process, base
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the API did not become ready"
                await asyncio.sleep(0.1)

    def start_worker(self, concurrency: int = 2) -> subprocess.Popen[bytes]:
        name = f"worker-{len(self.processes)}.log"
        return self._start(
            ["worker", "--concurrency", str(concurrency), "--metrics-port", "0"], name
        )

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(10)


@pytest.fixture
def stack(fault_servers: Servers, tmp_path: Path) -> Iterator[Stack]:
    processes = Stack(fault_servers, tmp_path)
    try:
        yield processes
    finally:
        processes.kill_all()


# -- customers ---------------------------------------------------------------------------


@dataclass
class Customer:
    tenant_id: str
    user_id: int
    key: str
    tokens: int
    admin: dict[str, str]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_customer(base: str, db: Database, tokens: int) -> Customer:
    """A tenant, one user with ``tokens`` and an API key, through the admin API."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        login = await client.post("/api/v1/auth/token", json=ROOT)
        assert login.status_code == 200, login.text
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        tenant = await client.post(
            "/api/v1/admin/tenants",
            json={"name": "Faults", "slug": f"f-{uuid.uuid4().hex[:12]}"},
            headers=admin,
        )
        assert tenant.status_code == 201, tenant.text
        tenant_id = tenant.json()["id"]
        admin_base = f"/api/v1/admin/tenants/{tenant_id}"
        imported = await client.post(
            f"{admin_base}/users/import", json={"users": [{"external_id": "u"}]}, headers=admin
        )
        assert imported.status_code == 200, imported.text
        recharge = await client.post(
            f"{admin_base}/recharges/bulk",
            json={"users": ["u"], "amount": tokens, "reason": "faults"},
            headers=admin,
        )
        assert recharge.status_code == 200, recharge.text
        key = await client.post(
            f"{admin_base}/users/u/api-keys",
            json={"name": "faults", "rate_limit_per_second": 1000},
            headers=admin,
        )
        assert key.status_code == 201, key.text
    async with db.session() as s:
        user_id = (
            await s.execute(
                text("SELECT id FROM users WHERE tenant_id = :t AND external_id = 'u'"),
                {"t": tenant_id},
            )
        ).scalar_one()
    return Customer(tenant_id, user_id, key.json()["key"], tokens, admin)


# -- load, retries and the checks ----------------------------------------------------------


@dataclass
class Request:
    """One swap and every answer it got, the last one the one that counts."""

    key: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    answers: list[tuple[int | None, dict[str, Any] | str]] = field(default_factory=list)

    @property
    def status(self) -> int | None:
        return self.answers[-1][0] if self.answers else None

    @property
    def settled(self) -> bool:
        return self.status is not None and self.status not in RETRYABLE

    def job_ids(self) -> set[str]:
        """The jobs its answers named: a 200's or 202's job, an error's details."""
        named = set()
        for _, body in self.answers:
            if isinstance(body, dict):
                job_id = body.get("job_id") or (body.get("error", {}).get("details") or {}).get(
                    "job_id"
                )
                if job_id:
                    named.add(job_id)
        return named


async def send(client: httpx.AsyncClient, customer: Customer, request: Request) -> None:
    headers = {**customer.headers, "Idempotency-Key": request.key, **request.headers}
    try:
        response = await client.post("/api/v1/swap-face", json=request.body, headers=headers)
    except httpx.TransportError as exc:  # reset, refused, no answer: the client retries
        request.answers.append((None, type(exc).__name__))
        return
    try:
        body: dict[str, Any] | str = response.json()
    except ValueError:
        body = response.text
    request.answers.append((response.status_code, body))


async def run_load(
    bases: list[str],
    customer: Customer,
    requests: list[Request],
    *,
    concurrency: int = 8,
    gap_s: float = 0.0,
) -> None:
    """Send every request once, ``concurrency`` at a time, spread over the API processes."""
    queue: asyncio.Queue[tuple[int, Request]] = asyncio.Queue()
    for item in enumerate(requests):
        queue.put_nowait(item)
    clients = [httpx.AsyncClient(base_url=base, timeout=60) for base in bases]

    async def sender() -> None:
        while not queue.empty():
            index, request = queue.get_nowait()
            await send(clients[index % len(clients)], customer, request)
            await asyncio.sleep(gap_s)

    try:
        await asyncio.gather(*(sender() for _ in range(concurrency)))
    finally:
        for client in clients:
            await client.aclose()


async def retry_unanswered(
    base: str, customer: Customer, requests: list[Request], *, timeout_s: float = 40.0
) -> None:
    """Retry with the same key every request that got no answer or a 503, until each has
    one (what docs/api.md tells clients to do)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        while pending := [r for r in requests if not r.settled]:
            assert time.monotonic() < deadline, [r.answers for r in pending[:5]]
            await asyncio.gather(*(send(client, customer, r) for r in pending))
            await asyncio.sleep(0.2)


async def settled_jobs(db: Database, customer: Customer, timeout_s: float = 40.0) -> list[dict]:
    """The user's jobs once none is queued or running (workers finish them, or end them as
    abandoned), with their captures in the ledger and their hold's state."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with db.session() as s:
            rows = [
                dict(r._mapping)
                for r in await s.execute(
                    text(
                        """
                        SELECT j.id::text AS id, j.status, j.tokens_charged, j.attempts,
                               (SELECT count(*) FROM ledger_entries l
                                 WHERE l.tenant_id = j.tenant_id
                                   AND l.reference = j.hold_reference
                                   AND l.kind = 'capture') AS captures,
                               (SELECT coalesce(sum(l.amount), 0)::bigint FROM ledger_entries l
                                 WHERE l.tenant_id = j.tenant_id
                                   AND l.reference = j.hold_reference
                                   AND l.kind = 'capture') AS captured,
                               (SELECT h.status FROM holds h
                                 WHERE h.tenant_id = j.tenant_id
                                   AND h.reference = j.hold_reference) AS hold
                          FROM jobs j WHERE j.user_id = :u
                        """
                    ),
                    {"u": customer.user_id},
                )
            ]
        if all(r["status"] in ("succeeded", "failed", "canceled") for r in rows):
            return rows
        assert time.monotonic() < deadline, [r for r in rows if r["status"] in ("queued",)]
        await asyncio.sleep(0.2)


async def assert_every_charge_answered(
    base: str, db: Database, customer: Customer, requests: list[Request]
) -> list[dict]:
    """After the fault and the clients' retries: one job per key, each named by its
    request's answers; every 200 charged exactly once; every charge answered; no hold
    open; the balance is what the captures say; the ledger verifies."""
    for request in requests:
        assert request.status in (200, 202), request.answers
    jobs = await settled_jobs(db, customer)
    by_id = {job["id"]: job for job in jobs}
    named = [request.job_ids() for request in requests]
    assert all(len(ids) == 1 for ids in named), [r.answers for r in requests]
    assert set().union(*named) == set(by_id), "a job that no answer names"
    assert len(by_id) == len(requests), "a key that made two jobs"
    for request, (job_id,) in zip(requests, named, strict=True):
        job = by_id[job_id]
        if request.status == 200:
            assert job["status"] == "succeeded" and job["captures"] == 1, job
            assert request.answers[-1][1]["tokens_charged"] == job["tokens_charged"], job
        assert job["captures"] <= 1 and job["captured"] == job["tokens_charged"], job
        assert job["hold"] != "held", job
    async with db.session() as s:
        balance, held = (
            await s.execute(
                text("SELECT balance, held FROM accounts WHERE user_id = :u"),
                {"u": customer.user_id},
            )
        ).one()
    assert held == 0
    assert balance == customer.tokens - sum(job["tokens_charged"] for job in jobs)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        verify = await client.get(
            "/api/v1/admin/ledger/verify",
            params={"tenant_id": customer.tenant_id},
            headers=customer.admin,
        )
    assert verify.status_code == 200 and verify.json()["ok"] is True, verify.text
    return jobs
