"""Real `swapmeter worker` processes: a SIGKILLed worker's job is finished by another and
charged once; jobs nobody will run again are failed and released; queued jobs cancel at
once. The API app here runs no worker of its own.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app import ratelimit
from app.db import Database
from app.errors import Conflict
from app.jobs import queue, settle
from app.jobs import repository as repo
from app.jobs import worker as worker_module
from app.jobs.repository import JobRecord
from app.jobs.runner import JobRunner, RunReport, RunState
from app.jobs.worker import Worker
from app.settings import Settings
from billing import holds
from tests.admin.helpers import root_headers
from tests.conftest import REPO
from tests.jobs.conftest import (
    Customer,
    LocalServer,
    assert_delivered,
    balance,
    client_for,
    face,
    free_port,
    job_settings,
    ledger_kinds,
    make_customer,
    running_app,
    verify_ledger,
    wait_for_job,
)

OBAMA = base64.b64encode(face("obama.jpg")).decode()
BIDEN = base64.b64encode(face("biden.jpg")).decode()
LEASE_S = 2.0


@pytest.fixture(scope="module")
async def api_app(settings, tmp_path_factory) -> AsyncIterator[FastAPI]:
    configured = job_settings(
        settings,
        tmp_path_factory.mktemp("worker-processes"),
        jobs_inprocess_worker=False,
        jobs_lease_seconds=LEASE_S,
        jobs_image_wait_seconds=0.5,
    )
    async with running_app(configured) as application:
        yield application


@pytest.fixture
async def api(api_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(api_app) as client:
        yield client


class WorkerProcesses:
    """`swapmeter worker` subprocesses sharing the API app's database and result store."""

    def __init__(self, settings: Settings) -> None:
        self.env = {
            **os.environ,
            "SWAPMETER_ENVIRONMENT": "test",
            "SWAPMETER_DATABASE_URL": settings.database_url,
            "SWAPMETER_REDIS_URL": settings.redis_url,
            "SWAPMETER_JWT_SECRET": settings.jwt_secret,
            "SWAPMETER_DATA_DIR": str(settings.data_dir),
            "SWAPMETER_RESULTS_DIR": str(settings.results_path),
            "SWAPMETER_MODELS_DIR": str(settings.models_dir),
            "SWAPMETER_JOBS_LEASE_SECONDS": str(LEASE_S),
            "SWAPMETER_JOBS_POLL_SECONDS": "0.5",
            "SWAPMETER_JOBS_HOUSEKEEPING_SECONDS": "0.5",
            "SWAPMETER_LOG_LEVEL": "WARNING",
        }
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, metrics_port: int = 0) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "worker",
                "--concurrency",
                "1",
                "--metrics-port",
                str(metrics_port),
            ],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture
def workers(api_app: FastAPI) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(api_app.state.settings)
    try:
        yield processes
    finally:
        processes.stop_all()


async def job_row(db, job_id: str) -> dict[str, object]:
    async with db.session() as s:
        row = (
            await s.execute(
                text("SELECT status, attempts, worker_id FROM jobs WHERE id = :id"), {"id": job_id}
            )
        ).one()
    return dict(row._mapping)


async def test_a_worker_killed_mid_video_is_replaced_by_another_and_the_user_is_charged_once(
    api, db, workers: WorkerProcesses, clip_long: bytes
) -> None:
    customer = await make_customer(api, db, tokens=500)
    response = await api.post(
        "/api/v1/swap-face",
        json={"source": OBAMA, "target": base64.b64encode(clip_long).decode()},
        headers=customer.headers,
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    first = workers.start()
    await wait_for_job(api, customer, job_id, until=lambda j: j["progress"] > 0, timeout_s=90)
    metrics_port = free_port()
    second = workers.start(metrics_port)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    row = await job_row(db, job_id)
    assert row["status"] == "processing" and row["attempts"] == 1

    job = await wait_for_job(api, customer, job_id, timeout_s=120)
    assert job["status"] == "succeeded", job
    assert job["tokens_charged"] == 200
    row = await job_row(db, job_id)
    assert row["attempts"] == 2
    assert await balance(api, customer) == {"balance": 300, "held": 0, "available": 300}
    assert await ledger_kinds(api, customer) == [
        ("recharge", 500),
        ("hold", -200),
        ("capture", -200),
    ]
    assert (await verify_ledger(api, customer.tenant_id))["ok"] is True
    async with httpx.AsyncClient() as scraper:  # the worker's own /metrics
        scraped = (await scraper.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    assert 'swapmeter_job_run_seconds_count{kind="video",status="succeeded"} 1.0' in scraped
    assert 'swapmeter_job_queue_wait_seconds_count{kind="video"} 1.0' in scraped
    assert "swapmeter_workers_live" in scraped

    second.send_signal(signal.SIGTERM)  # a clean stop: nothing running, exits at once
    assert await asyncio.to_thread(second.wait, 30) == 0


async def queued_image_job(api: httpx.AsyncClient, customer: Customer) -> uuid.UUID:
    """An image swap left queued: no worker runs here, so the image wait runs out (202)."""
    response = await api.post(
        "/api/v1/swap-face",
        json={"source": OBAMA, "target": base64.b64encode(face("biden.jpg")).decode()},
        headers=customer.headers,
    )
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["job_id"])


async def lease(
    db: Database, job_id: uuid.UUID, worker_id: str, *, attempts: int | None, seconds: float
) -> None:
    """Make the job processing, leased to ``worker_id`` for ``seconds`` from now (negative:
    the lease ran out), on attempt ``attempts`` (None: its last)."""
    async with db.session() as s:
        await s.execute(
            text(
                "UPDATE jobs SET status = 'processing', worker_id = :worker_id, "
                "attempts = coalesce(:attempts, max_attempts), "
                "leased_until = now() + make_interval(secs => :seconds) WHERE id = :id"
            ),
            {"id": job_id, "worker_id": worker_id, "attempts": attempts, "seconds": seconds},
        )


async def test_a_job_whose_last_attempt_lost_its_worker_fails_with_worker_lost_and_is_released(
    api, api_app, db
) -> None:
    customer = await make_customer(api, db, tokens=10)
    job_id = await queued_image_job(api, customer)
    assert (await balance(api, customer))["held"] == 1
    # Its third worker died too, and the lease ran out.
    await lease(db, job_id, "dead", attempts=None, seconds=-1)
    await Worker(api_app.state.settings, db, cleanup=False).housekeeping()

    job = await wait_for_job(api, customer, str(job_id), timeout_s=5)
    assert job["status"] == "failed" and job["error"]["code"] == "WorkerLost"
    assert job["tokens_charged"] == 0
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
    assert await ledger_kinds(api, customer) == [("recharge", 10), ("hold", -1), ("release", 1)]


async def test_a_worker_cannot_finish_a_job_whose_hold_someone_else_settled(
    api, api_app, db
) -> None:
    customer = await make_customer(api, db, tokens=10)
    job_id = await queued_image_job(api, customer)
    await lease(db, job_id, "w1", attempts=1, seconds=60)  # worker w1 claims it
    async with db.session() as s:
        job = await repo.get_job(s, job_id)
    assert job is not None
    async with db.session() as s:  # e.g. an operator released the hold by hand meanwhile
        await holds.release(s, job.tenant_id, str(job.hold_reference), reason="manual")

    with pytest.raises(Conflict):
        async with db.session() as s:
            await settle.finish_job(
                s, job, "w1", settle.Outcome("succeeded", result={}), webhook_lease_s=60.0
            )
    after = (await api.get(f"/api/v1/jobs/{job.id}", headers=customer.headers)).json()
    assert (after["status"], after["tokens_charged"]) == ("processing", 0)
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
    assert await ledger_kinds(api, customer) == [("recharge", 10), ("hold", -1), ("release", 1)]
    assert (await verify_ledger(api, customer.tenant_id))["ok"] is True


async def test_a_worker_that_lost_its_lease_leaves_the_finished_attempts_result_alone(
    api, api_app, db
) -> None:
    """Worker A stalls mid-swap past its lease; B runs the job again and finishes it. When
    A wakes up it discards only its own output: the customer keeps the result paid for."""
    customer = await make_customer(api, db, tokens=10)
    job_id = await queued_image_job(api, customer)
    settings, store = api_app.state.settings, api_app.state.result_store
    swapping, resume = threading.Event(), threading.Event()

    class StallingRunner(JobRunner):
        def _swap_image(self, *args: Any) -> Any:
            swapping.set()
            resume.wait(30)
            return super()._swap_image(*args)

    async def job_leased_to(worker_id: str, attempt: int) -> JobRecord:
        await lease(db, job_id, worker_id, attempts=attempt, seconds=60)
        async with db.session() as s:
            job = await repo.get_job(s, job_id)
        assert job is not None
        return job

    with ThreadPoolExecutor(2) as executor:
        job_a = await job_leased_to("A", 1)
        stale = asyncio.create_task(
            StallingRunner(settings, db, store, executor).run(job_a, "A", RunState())
        )
        assert await asyncio.to_thread(swapping.wait, 30)
        job_b = await job_leased_to("B", 2)  # A's lease ran out; B claimed the job
        finished = await JobRunner(settings, db, store, executor).run(job_b, "B", RunState())
        assert finished.job is not None and finished.job.status == "succeeded"
        resume.set()
        assert (await stale).job is None  # A's output was discarded

    await assert_delivered(api, customer, job_id)


class HeldRunner:
    """Stands in for the job runner: an attempt at ``job_id`` runs until the event of its
    attempt number is set; other jobs end at once."""

    def __init__(self, job_id: uuid.UUID, release: dict[int, asyncio.Event]) -> None:
        self.job_id, self.release = job_id, release

    async def run(self, job: JobRecord, worker_id: str, state: RunState) -> RunReport:
        if job.id == self.job_id:
            await self.release[job.attempts].wait()
        return RunReport(None)


async def test_a_worker_that_claims_its_own_lapsed_job_again_keeps_the_new_attempt(
    api, api_app, db
) -> None:
    """This worker's renewals failed and its lease on a job ran out; it claimed the job
    again (attempt 2) while attempt 1 still ran. When attempt 1 ends, attempt 2 keeps its
    place among the running jobs and its tenant slot."""
    customer = await make_customer(api, db, tokens=10)
    job_id = await queued_image_job(api, customer)
    release: dict[int, asyncio.Event] = {1: asyncio.Event(), 2: asyncio.Event()}

    worker = Worker(api_app.state.settings, db, cleanup=False, concurrency=2)
    worker.runner = HeldRunner(job_id, release)  # type: ignore[assignment]
    try:
        await worker._fill()
        first = worker.running[job_id]
        await lease(db, job_id, worker.id, attempts=1, seconds=-1)  # renewals failed
        await worker._fill()
        second = worker.running[job_id]
        assert second is not first and worker.claimed[job_id].attempts == 2

        release[1].set()
        await first
        assert worker.running.get(job_id) is second
        assert await ratelimit.active_slots(worker.redis, customer.tenant_id) == 1
        release[2].set()
        await second
        assert job_id not in worker.running
        assert await ratelimit.active_slots(worker.redis, customer.tenant_id) == 0
    finally:
        for event in release.values():
            event.set()
        await asyncio.gather(*worker.running.values(), return_exceptions=True)
        await worker.redis.aclose()
        await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=customer.headers)


async def test_a_lapsed_attempt_ending_late_leaves_the_tenant_slot_of_its_replacement(
    api, api_app, db
) -> None:
    """Worker A stalls past its lease; worker B runs the job again. When A's attempt
    finally ends, B's attempt still counts against the tenant's concurrent-job cap."""
    customer = await make_customer(api, db, tokens=10)
    job_id = await queued_image_job(api, customer)
    release: dict[int, asyncio.Event] = {1: asyncio.Event(), 2: asyncio.Event()}

    workers = [Worker(api_app.state.settings, db, cleanup=False) for _ in "AB"]
    for worker in workers:
        worker.runner = HeldRunner(job_id, release)  # type: ignore[assignment]
    a, b = workers
    try:
        await a._fill()
        await lease(db, job_id, a.id, attempts=1, seconds=-1)  # A's renewals stalled
        await b._fill()
        assert b.claimed[job_id].attempts == 2
        assert await ratelimit.active_slots(b.redis, customer.tenant_id) == 1

        release[1].set()
        await a.running[job_id]
        assert await ratelimit.active_slots(b.redis, customer.tenant_id) == 1
        release[2].set()
        await b.running[job_id]
        assert await ratelimit.active_slots(b.redis, customer.tenant_id) == 0
    finally:
        for event in release.values():
            event.set()
        for worker in workers:
            await asyncio.gather(*worker.running.values(), return_exceptions=True)
            await worker.redis.aclose()
        await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=customer.headers)


async def swap_with_a_worker(
    api: httpx.AsyncClient,
    api_app: FastAPI,
    db: Database,
    customer: Customer,
    settings: Settings | None = None,
    *,
    linger_s: float = 0.0,
    **options: Any,
) -> httpx.Response:
    """obama.jpg onto biden.jpg, waited for, while an in-process worker (``settings``, by
    default the app's) runs; the worker stops ``linger_s`` after the answer."""
    worker = Worker(
        settings or api_app.state.settings, db, store=api_app.state.result_store, cleanup=False
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        response = await api.post(
            "/api/v1/swap-face",
            json={"source": OBAMA, "target": BIDEN, **options},
            headers={**customer.headers, "Prefer": "wait=60"},
        )
        await asyncio.sleep(linger_s)
        return response
    finally:
        stop.set()
        await running


async def test_a_database_blip_while_finishing_costs_the_job_neither_its_lease_nor_an_attempt(
    api, api_app, db, monkeypatch
) -> None:
    """The worker's connection dies as it finishes a done swap (a failover, a killed
    backend): it finishes again at once, on attempt 1, instead of leaving the customer to
    wait out the lease for a second run."""
    real_finish = settle.finish_job
    blips: list[str] = []

    async def finish_after_a_blip(session: Any, *args: Any, **kwargs: Any) -> Any:
        if not blips:  # the backend dies under the finish's first statement
            blips.append("killed")
            await session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return await real_finish(session, *args, **kwargs)

    monkeypatch.setattr(settle, "finish_job", finish_after_a_blip)
    customer = await make_customer(api, db, tokens=10)
    response = await swap_with_a_worker(api, api_app, db, customer)
    assert blips == ["killed"]
    assert response.status_code == 200, response.text
    async with db.session() as s:
        attempts = (
            await s.execute(
                text("SELECT attempts FROM jobs WHERE id = :id"), {"id": response.json()["job_id"]}
            )
        ).scalar_one()
    assert attempts == 1
    assert await balance(api, customer) == {"balance": 9, "held": 0, "available": 9}


async def test_a_finish_whose_commit_landed_but_whose_answer_was_lost_is_not_undone(
    api, api_app, db, monkeypatch
) -> None:
    """The connection breaks after the finish committed, before the worker heard so: the
    retry finds the job no longer processing, and must see that its own commit did it,
    not discard the result the customer was charged for."""
    real_finish_once = JobRunner._finish_once
    lost: list[str] = []

    async def answer_lost(self: JobRunner, *args: Any, **kwargs: Any) -> Any:
        finished = await real_finish_once(self, *args, **kwargs)
        if not lost:
            lost.append("answer lost")
            raise ConnectionResetError("the connection broke before COMMIT's answer came")
        return finished

    monkeypatch.setattr(JobRunner, "_finish_once", answer_lost)
    customer = await make_customer(api, db, tokens=10)
    # The worker stays a moment after the answer: its retry checks the row, keeps the result.
    response = await swap_with_a_worker(api, api_app, db, customer, linger_s=0.5)
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    assert lost == ["answer lost"]
    download = await api.get(f"/api/v1/jobs/{job_id}/result", headers=customer.headers)
    assert download.status_code == 200 and download.content[:2] == b"\xff\xd8"
    assert await balance(api, customer) == {"balance": 9, "held": 0, "available": 9}
    assert await ledger_kinds(api, customer) == [("recharge", 10), ("hold", -1), ("capture", -1)]


@pytest.mark.parametrize(
    ("engine", "options"),
    [({"swapper": "inswapper_128"}, {}), ({}, {"enhance": True})],
    ids=["swapper", "enhancer"],
)
async def test_a_swap_whose_model_is_not_installed_is_503_with_retry_after(
    api, api_app, db, engine: dict[str, str], options: dict[str, bool]
) -> None:
    """The operator chose a learned swapper, or the customer asked (and would pay) for
    the enhancer, but it is not installed: the customer is told it is our side (503
    ModelNotInstalled) and when to try again, and pays nothing."""
    settings = api_app.state.settings.model_copy(
        update={**engine, "allow_noncommercial_models": True}
    )
    customer = await make_customer(api, db, tokens=10)
    response = await swap_with_a_worker(api, api_app, db, customer, settings, **options)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "ModelNotInstalled"
    # Which file is missing, and where, is for the operator's log, not for the customer.
    assert "models" not in error["message"] and ".onnx" not in error["message"]
    assert int(response.headers["retry-after"]) > 0
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}


async def test_a_job_given_back_at_shutdown_after_a_cancel_request_is_canceled_not_requeued(
    api, api_app, db
) -> None:
    customer = await make_customer(api, db, tokens=10)
    job_id = await queued_image_job(api, customer)
    await lease(db, job_id, "w1", attempts=1, seconds=60)  # w1 runs it; its owner cancels
    cancel = await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=customer.headers)
    assert cancel.status_code == 200 and cancel.json()["cancel_requested"] is True

    async with db.session() as s:  # w1 shuts down before it saw the request
        assert await queue.give_back(s, job_id, "w1", 1) is False
    await lease(db, job_id, "w1", attempts=1, seconds=-1)
    await Worker(api_app.state.settings, db, cleanup=False).housekeeping()

    job = await wait_for_job(api, customer, str(job_id), timeout_s=5)
    assert job["status"] == "canceled" and job["tokens_charged"] == 0
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
    assert await ledger_kinds(api, customer) == [("recharge", 10), ("hold", -1), ("release", 1)]


@pytest.mark.parametrize("stops", [True, False], ids=["stops-when-told", "still-running"])
async def test_at_shutdown_a_running_job_goes_back_to_the_queue_only_once_it_has_stopped(
    api, api_app, db, monkeypatch, stops: bool
) -> None:
    """A stopping worker tells its jobs to stop. One that does is queued again at once,
    its attempt not counted. One still running keeps its lease, so that no other worker
    claims it under the same attempt number (and its files) while it runs."""
    monkeypatch.setattr(worker_module, "STOP_WAIT_S", 0.2)
    customer = await make_customer(api, db, tokens=10)
    job_id = await queued_image_job(api, customer)
    started, stuck = asyncio.Event(), asyncio.Event()

    class Runner:
        async def run(self, job: JobRecord, worker_id: str, state: RunState) -> RunReport:
            if job.id == job_id:
                started.set()
                if stops:  # state.cancel is a threading.Event: the engine's thread polls it
                    await asyncio.to_thread(state.cancel.wait)
                else:
                    await stuck.wait()
            return RunReport(None)

    worker = Worker(api_app.state.settings, db, cleanup=False, shutdown_grace_s=0.1)
    worker.runner = Runner()  # type: ignore[assignment]
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(started.wait(), 10)
        stop.set()
        await asyncio.wait_for(running, 10)
        async with db.session() as s:
            job = await repo.get_job(s, job_id)
        assert job is not None
        if stops:
            assert (job.status, job.attempts, job.worker_id) == ("queued", 0, None)
        else:
            assert (job.status, job.attempts, job.worker_id) == ("processing", 1, worker.id)
    finally:
        stuck.set()
        await asyncio.gather(*worker.running.values(), return_exceptions=True)
        await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=customer.headers)


async def test_an_api_process_scraped_shows_the_clusters_queue_and_live_workers(api, db) -> None:
    """The API process runs no worker here; its /metrics must still show the queue, what
    it holds and how long it has waited, and the workers, as the database has them, not
    zeros it never refreshed."""
    customer = await make_customer(api, db, tokens=10)
    job_id = await queued_image_job(api, customer)
    held_back = await queued_image_job(api, customer)
    async with db.session() as s:  # queued a minute ago: nobody took it
        await s.execute(
            text("UPDATE jobs SET created_at = now() - interval '60 s' WHERE id = :id"),
            {"id": job_id},
        )
        await s.execute(  # older, but its tenant is at its cap: no sign of missing workers
            text(
                "UPDATE jobs SET created_at = now() - interval '600 s', "
                "run_after = now() + interval '60 s' WHERE id = :id"
            ),
            {"id": held_back},
        )
    async with db.session() as s:
        await queue.heartbeat(
            s, "elsewhere:1", hostname="elsewhere", pid=1, concurrency=1, running=0
        )
    try:
        body = (await api.get("/metrics")).text
        samples = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith(("swapmeter_workers_live", "swapmeter_jobs_"))
        }
        assert samples["swapmeter_workers_live"] >= 1
        assert samples['swapmeter_jobs_in_queue{kind="image"}'] >= 1
        assert samples['swapmeter_jobs_tokens_held{kind="image"}'] >= 1
        assert 59 <= samples['swapmeter_jobs_oldest_queued_seconds{kind="image"}'] < 120
    finally:
        async with db.session() as s:
            await s.execute(text("DELETE FROM workers WHERE id = 'elsewhere:1'"))
        for queued in (job_id, held_back):
            await api.post(f"/api/v1/jobs/{queued}/cancel", headers=customer.headers)


async def test_a_worker_without_its_models_says_so_when_it_starts(
    api_app, db, tmp_path, caplog
) -> None:
    """Not only the first customer's 503: the operator sees what to install at start-up."""
    settings = api_app.state.settings.model_copy(update={"models_dir": tmp_path})
    worker = Worker(settings, db, store=api_app.state.result_store, cleanup=False)
    stop = asyncio.Event()
    with caplog.at_level("WARNING", logger="app.jobs.worker"):
        running = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(0.2)
        stop.set()
        await running
    assert "models not installed" in caplog.text and "yunet" in caplog.text


async def test_cancelling_a_queued_job_releases_everything_at_once(api, api_app, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    job_id = await queued_image_job(api, customer)
    canceled = await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=customer.headers)
    assert canceled.status_code == 200
    job = canceled.json()
    assert job["status"] == "canceled" and job["tokens_charged"] == 0
    assert job["error"]["code"] == "Canceled"
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
    inputs = Path(api_app.state.settings.results_path) / "inputs"
    assert not list(inputs.glob(job_id.hex + "*"))


async def test_a_cancel_that_races_a_shutdown_give_back_still_cancels(
    api, api_app, db, monkeypatch
) -> None:
    """The job is processing when the cancel looks, and its worker gives it back to the
    queue (shutting down) just before the cancel flags it: the cancel looks again and
    cancels the queued job, rather than answering that the job already finished."""
    customer = await make_customer(api, db, tokens=10)
    job_id = await queued_image_job(api, customer)
    await lease(db, job_id, "w1", attempts=1, seconds=60)
    real_request_cancel = settle.request_cancel
    given_back = False

    async def request_cancel(session: Any, job: uuid.UUID, user_id: int) -> Any:
        nonlocal given_back
        if not given_back:  # w1 shuts down right now and commits its give-back
            given_back = True
            async with db.session() as s:
                assert await queue.give_back(s, job_id, "w1", 1)
        return await real_request_cancel(session, job, user_id)

    monkeypatch.setattr(settle, "request_cancel", request_cancel)
    canceled = await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=customer.headers)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}


async def test_a_cancel_with_an_idempotency_key_is_answered_once_and_replayed(
    api, api_app, db
) -> None:
    customer = await make_customer(api, db, tokens=10)
    job_id = await queued_image_job(api, customer)
    keyed = {**customer.headers, "Idempotency-Key": "cancel-1"}
    first = await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=keyed)
    again = await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=keyed)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and first.json()["status"] == "canceled"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await ledger_kinds(api, customer) == [("recharge", 10), ("hold", -1), ("release", 1)]

    other_job = await queued_image_job(api, customer)
    reused = await api.post(f"/api/v1/jobs/{other_job}/cancel", headers=keyed)
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "IdempotencyKeyReused"
    still = (await api.get(f"/api/v1/jobs/{other_job}", headers=customer.headers)).json()
    assert still["status"] == "queued"
    await api.post(f"/api/v1/jobs/{other_job}/cancel", headers=customer.headers)  # tidy up


# -- jobs no worker runs ------------------------------------------------------------------------


async def test_a_job_no_worker_runs_fails_with_queue_timeout_and_its_tokens_come_back(
    settings, tmp_path, db, local_server: LocalServer
) -> None:
    """No worker at all: the API process itself ends the job once it has waited past
    SWAPMETER_JOBS_QUEUE_TIMEOUT_SECONDS, and the customer waiting for it hears why."""
    configured = job_settings(
        settings,
        tmp_path,
        jobs_inprocess_worker=False,
        jobs_queue_timeout_seconds=1.0,
        jobs_housekeeping_seconds=0.2,
        jobs_image_wait_seconds=10.0,
        url_fetch_allow_hosts=local_server.allow,
    )
    async with running_app(configured) as application, client_for(application) as api:
        customer = await make_customer(api, db, tokens=10)
        hook = local_server.url(f"/hooks/{customer.external_id}")
        response = await api.post(
            "/api/v1/swap-face",
            json={"source": OBAMA, "target": BIDEN, "webhook_url": hook},
            headers=customer.headers,
        )
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "QueueTimeout" and "Tokens were released" in error["message"]
        job_id = error["details"]["job_id"]
        assert error["details"]["tokens_charged"] == 0

        job = (await api.get(f"/api/v1/jobs/{job_id}", headers=customer.headers)).json()
        assert (job["status"], job["error"]["code"]) == ("failed", "QueueTimeout")
        assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
        assert await ledger_kinds(api, customer) == [
            ("recharge", 10),
            ("hold", -1),
            ("release", 1),
        ]
        inputs = Path(configured.results_path) / "inputs"
        assert not list(inputs.glob(uuid.UUID(job_id).hex + "*"))
        posted = await local_server.posted(f"/hooks/{customer.external_id}")
        assert orjson.loads(posted[0][2])["error"]["code"] == "QueueTimeout"


async def test_only_jobs_still_queued_past_the_queue_timeout_are_ended(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    waiting, running, recent = [await queued_image_job(api, customer) for _ in range(3)]
    await lease(db, running, "w1", attempts=1, seconds=60)  # a worker took it long ago
    async with db.session() as s:
        await s.execute(
            text("UPDATE jobs SET created_at = now() - interval '2 hours' WHERE id = ANY(:ids)"),
            {"ids": [waiting, running]},
        )

    async def end_all(queue_timeout_s: float) -> list[tuple[uuid.UUID, str, str | None]]:
        ended = []
        while True:
            async with db.session() as s:
                one = await settle.end_abandoned_job(
                    s, webhook_lease_s=60.0, queue_timeout_s=queue_timeout_s
                )
            if one is None:
                return ended
            ended.append((one[0].id, one[0].status, one[0].error_code))

    assert await end_all(0) == []  # 0: jobs wait however long it takes
    assert await end_all(3600) == [(waiting, "failed", "QueueTimeout")]
    assert await balance(api, customer) == {"balance": 10, "held": 2, "available": 8}
    statuses = {}
    for job_id in (running, recent):
        async with db.session() as s:
            job = await repo.get_job(s, job_id)
        assert job is not None
        statuses[job_id] = job.status
    assert statuses == {running: "processing", recent: "queued"}


async def test_suspending_a_tenant_cancels_its_queued_jobs_and_gives_their_tokens_back(
    api, db
) -> None:
    customer = await make_customer(api, db, tokens=10)
    job_id = await queued_image_job(api, customer)
    async with db.session() as s:
        others = (
            await s.execute(
                text(
                    "SELECT DISTINCT tenant_id FROM jobs WHERE tenant_id <> :t "
                    "AND status IN ('queued', 'processing')"
                ),
                {"t": customer.tenant_id},
            )
        ).scalars()
        await s.execute(
            text("UPDATE tenants SET status = 'suspended' WHERE id = :t"),
            {"t": customer.tenant_id},
        )
        # Suspended: no worker starts its jobs any more.
        assert await queue.claim_next(s, "w1", 30.0, list(others)) is None

    for _ in range(100):  # the API process's own housekeeping ends it
        async with db.session() as s:
            job = await repo.get_job(s, job_id)
        assert job is not None
        if job.status != "queued":
            break
        await asyncio.sleep(0.1)
    reinstated = await api.patch(
        f"/api/v1/admin/tenants/{customer.tenant_id}",
        json={"status": "active"},
        headers=await root_headers(api),
    )
    assert reinstated.status_code == 200, reinstated.text
    seen = (await api.get(f"/api/v1/jobs/{job_id}", headers=customer.headers)).json()
    assert (seen["status"], seen["tokens_charged"]) == ("canceled", 0)
    assert "suspended" in seen["error"]["message"]
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
    assert await ledger_kinds(api, customer) == [("recharge", 10), ("hold", -1), ("release", 1)]
