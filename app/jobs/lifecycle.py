"""What the swap API needs running inside each API process, started with the app.

- the result store and a rate-limit Redis client with short timeouts (a dead Redis costs
  milliseconds per request, never a hang);
- the one listener connection that wakes requests waiting for their jobs;
- with ``SWAPMETER_JOBS_INPROCESS_WORKER`` (``swapmeter dev``, tests), a job worker with
  its housekeeping and cleanup loops.

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
from app.jobs.runner import scratch_root
from app.jobs.worker import Worker, sweep_scratch

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

    worker_task: asyncio.Task[None] | None = None
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
        worker_task = asyncio.create_task(worker.run(stop_worker), name="swapmeter-worker")

    async def stop() -> None:
        if worker_task is not None:
            stop_worker.set()
            with contextlib.suppress(Exception):
                await worker_task
        await listener.stop()
        with contextlib.suppress(Exception):
            await app.state.ratelimit_redis.aclose()

    return stop
