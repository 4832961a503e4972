"""What the swap API needs running inside each API process, started with the app.

- the result store and a rate-limit Redis client with short timeouts (a dead Redis costs
  milliseconds per request, never a hang);
- the one listener connection that wakes requests waiting for their jobs;
- with ``SWAPMETER_JOBS_INPROCESS_WORKER`` (``swapmeter dev``, tests), a job worker with
  its housekeeping and cleanup loops; without one, the part of housekeeping that gives
  held Tokens back (``end_abandoned_jobs``: jobs of dead workers, jobs queued past
  ``SWAPMETER_JOBS_QUEUE_TIMEOUT_SECONDS``), so that it happens even when no worker runs.

``install`` wraps the application's lifespan, so these start after the database is up and
stop before it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app import ratelimit, storage
from app.jobs import repository as repo
from app.jobs.events import JobWaiters, PgListener
from app.jobs.media import scratch_root
from app.jobs.upkeep import end_abandoned_jobs, sweep_scratch
from app.jobs.worker import Worker
from app.webhooks import sweep

log = logging.getLogger(__name__)

INPROCESS_SHUTDOWN_GRACE_S = 5.0
# Video uploads of requests still being checked live seconds; older ones were left by an
# API process that was killed mid-request (workers, which sweep scratch files, may run on
# other hosts).
UPLOAD_MAX_AGE_S = 3600.0


def install(app: FastAPI) -> None:
    """Run the jobs runtime inside the app's lifespan (after start-up, before shutdown)."""
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with outer(application) as state:
            stop = await start(application)
            try:
                yield state
            finally:
                await stop()

    app.router.lifespan_context = lifespan


async def start(app: Any) -> Any:
    settings = app.state.settings
    await asyncio.to_thread(sweep_scratch, scratch_root(settings) / "uploads", UPLOAD_MAX_AGE_S)
    app.state.result_store = storage.build_result_store(settings)
    app.state.ratelimit_redis = ratelimit.rate_limit_redis(
        settings.redis_url or "redis://127.0.0.1:6379/0",
        settings.rate_limit_redis_timeout_seconds,
    )
    waiters = JobWaiters()
    app.state.job_waiters = waiters
    listener = PgListener(
        settings.database_url,
        {repo.JOB_DONE_CHANNEL: waiters.job_finished},
        on_reconnect=waiters.wake_all,
        name="swapmeter-api-waiters",
    )
    await listener.start()

    stop_worker = asyncio.Event()
    if settings.jobs_inprocess_worker:
        worker = Worker(
            settings,
            app.state.db,
            store=app.state.result_store,
            redis=app.state.ratelimit_redis,
            shutdown_grace_s=INPROCESS_SHUTDOWN_GRACE_S,
        )
        app.state.jobs_worker = worker
        background = asyncio.create_task(worker.run(stop_worker), name="swapmeter-worker")
    else:
        background = asyncio.create_task(_abandoned_jobs_loop(app), name="swapmeter-abandoned-jobs")

    async def stop() -> None:
        stop_worker.set()
        if not settings.jobs_inprocess_worker:
            background.cancel()
        await asyncio.wait([background])
        await listener.stop()
        with contextlib.suppress(Exception):
            await app.state.ratelimit_redis.aclose()

    return stop


async def _abandoned_jobs_loop(app: Any) -> None:
    """Every ``jobs_housekeeping_seconds``, end the jobs nobody will run, as workers do
    (any number of API processes and workers may: each job is ended once)."""
    settings = app.state.settings
    sending: set[asyncio.Task[None]] = set()
    while True:
        try:
            sends = await end_abandoned_jobs(
                settings, app.state.db, app.state.result_store, app.state.ratelimit_redis
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the next round retries
            log.exception("ending abandoned jobs failed")
            sends = []
        for delivery in sends:
            task = asyncio.create_task(sweep.send_logged(app.state.db, settings, delivery))
            sending.add(task)
            task.add_done_callback(sending.discard)
        await asyncio.sleep(settings.jobs_housekeeping_seconds)
