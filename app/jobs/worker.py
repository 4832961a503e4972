"""The job worker: claim, lease, run, and the housekeeping every worker shares.

Any number of these run, in ``swapmeter worker`` processes on any host or inside the API
process (``SWAPMETER_JOBS_INPROCESS_WORKER``, for ``swapmeter dev`` and tests):

- Claiming: the oldest claimable job, ``FOR UPDATE SKIP LOCKED`` (``app.jobs.queue``), then one
  of its tenant's concurrent-job slots in Redis. A tenant at its cap
  (``SWAPMETER_MAX_CONCURRENT_JOBS_PER_TENANT``) keeps its jobs queued (held back a
  second) while other tenants' jobs run; with Redis down the cap is not enforced.
- Waking: LISTEN on the new-job channel, over a dedicated connection, with a poll every
  ``jobs_poll_seconds`` in case a notification is missed.
- Leasing: each running job's lease is renewed every third of ``jobs_lease_seconds``
  (at least every second, which also publishes its progress); a lost lease stops the job
  and discards its output. Cancel requests arrive by LISTEN too,
  and with every renewal as a fallback.
- Housekeeping (every ``jobs_housekeeping_seconds``): heartbeat, the queue gauges, ending
  jobs nobody will run (``end_abandoned_jobs``: WorkerLost, QueueTimeout; API processes
  run that part too), sending webhooks whose sender died, the daily refill of the plans
  whose refill time has come (``billing.daily_refill``) and, when it is this worker's
  turn, the whole-ledger verification (``billing.ledger_verify``).
- Cleanup (every ``results_cleanup_interval_seconds``): expired results, stray temporary
  files, expired Idempotency-Keys, expired grant Tokens, forgotten workers (both in
  ``app.jobs.upkeep``).

A job runs on a thread of its own executor, so the event loop stays free for leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from app.core import logs, ratelimit, storage
from app.core import metrics as app_metrics
from app.core.audit import Anchor
from app.core.audit_anchor import AnchorPlaces
from app.core.db import Database
from app.core.settings import Settings
from app.core.storage import ResultStore
from app.jobs import announce, metrics, queue
from app.jobs import repository as repo
from app.jobs.events import PgListener
from app.jobs.repository import JobRecord
from app.jobs.runner import JobRunner, RunState
from app.jobs.upkeep import end_abandoned_jobs, run_cleanup
from billing import daily_refill, ledger_verify
from billing.maintenance import fold_usage

log = logging.getLogger(__name__)

DEFER_S = 1.0  # how long a job of a tenant (or user) at its cap is held back
STOP_WAIT_S = 30.0  # at shutdown, how long jobs told to stop get before they are given back


@dataclass
class _Skips:
    """Whom one round of claims looks past: tenants and users found at their cap."""

    tenants: list[uuid.UUID] = field(default_factory=list)
    users: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tenants or self.users)


def new_worker_id() -> str:
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """One worker: up to ``concurrency`` jobs at once, plus housekeeping and cleanup."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        store: ResultStore | None = None,
        redis: Redis | None = None,
        concurrency: int | None = None,
        shutdown_grace_s: float = 30.0,
        cleanup: bool = True,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store: ResultStore = store or storage.build_result_store(settings)
        self._own_redis = redis is None
        self.redis = redis or ratelimit.rate_limit_redis(
            settings.redis_url or "redis://127.0.0.1:6379/0",
            settings.rate_limit_redis_timeout_seconds,
        )
        self.concurrency = max(1, concurrency or settings.jobs_worker_concurrency)
        self.shutdown_grace_s = shutdown_grace_s
        self.cleanup = cleanup
        self.id = new_worker_id()
        self.lease_s = float(settings.jobs_lease_seconds)
        self.executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="swapmeter-job")
        self.runner = JobRunner(settings, db, self.store, self.executor)
        self.running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.states: dict[uuid.UUID, RunState] = {}
        self.claimed: dict[uuid.UUID, JobRecord] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        # New-job notifications not yet matched by a claim of this worker: a job ending
        # looks at the queue again only while some may be waiting, rather than spend a
        # transaction on an empty queue after every job. The poll still looks every
        # jobs_poll_seconds for jobs nobody announced (a missed notification, a job
        # deferred for its tenant's cap, a dead worker's job).
        self._announced = 1
        self._stopping = False
        self._verifying = False
        self._refilling = False
        self.anchors = AnchorPlaces.of(settings, self.redis, self.store)
        self._audit_head: Anchor | None = None  # as the last housekeeping round saw it

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then finish or give back running jobs and return."""
        listener = PgListener(
            self.settings.database_url,
            {repo.JOBS_CHANNEL: self._on_new_job, repo.JOB_CANCEL_CHANNEL: self._on_cancel},
            on_reconnect=self._on_reconnect,
            name="swapmeter-worker",
        )
        await listener.start()
        loops = [asyncio.create_task(self._housekeeping_loop(), name="swapmeter-housekeeping")]
        if self.cleanup:
            loops.append(asyncio.create_task(self._cleanup_loop(), name="swapmeter-cleanup"))
        log.info("worker %s started (concurrency %d)", self.id, self.concurrency)
        if self.settings.jobs_swapper != "noop":
            self._warn_of_missing_models()
        stop_wait = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self._fill()
                except Exception:  # noqa: BLE001 - a database hiccup: retry after the poll
                    log.exception("claiming jobs failed")
                wake = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {wake, stop_wait},
                    timeout=self.settings.jobs_poll_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                wake.cancel()
        finally:
            stop_wait.cancel()
            await self._shutdown(listener, loops)

    def _warn_of_missing_models(self) -> None:
        from inference.engine import models_missing

        config = self.settings.engine_config()
        missing = models_missing(config)
        if missing:
            log.warning(
                "models not installed in %s: %s; swaps fail with 503 ModelNotInstalled until "
                "they are (swapmeter models fetch %s, or models import)",
                config.models_dir,
                ", ".join(missing),
                " ".join(missing),
            )

    def _on_new_job(self, _payload: str) -> None:
        self._announced += 1
        self._wake.set()

    def _on_reconnect(self) -> None:
        self._announced = max(1, self._announced)  # some may have been missed meanwhile
        self._wake.set()

    def _on_cancel(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            state = self.states.get(uuid.UUID(payload))
            if state is not None:
                state.cancel_requested = True
                state.cancel.set()

    async def _fill(self) -> None:
        skip = _Skips()
        while not self._stopping and len(self.running) < self.concurrency:
            claimed = await self._claim(skip)
            if claimed is None:
                # Jobs of tenants or users at their cap (skipped) are still waiting.
                self._announced = 1 if skip else 0
                return
            self._announced = max(0, self._announced - 1)
            job = claimed.job
            if job.attempts > 1:  # the first run's worker died or lost its lease
                log.info("job %s: attempt %d of %d", job.id, job.attempts, job.max_attempts)
            metrics.QUEUE_WAIT.labels(job.kind).observe(max(0.0, claimed.queue_wait_s))
            state = RunState()
            self.states[job.id] = state
            self.claimed[job.id] = job
            task = asyncio.create_task(
                self._run_job(job, state, user_capped=claimed.user_job_cap is not None),
                name=f"job-{job.id}",
            )
            self.running[job.id] = task

    async def _claim(self, skip: _Skips) -> queue.Claimed | None:
        """The next job this worker may run, leased to it; None when there is none.

        One transaction: the claim, then its tenant's slot in Redis, and its user's when
        their plan caps their concurrent jobs. A job whose tenant or user is at its cap is
        given back in the same transaction, held back DEFER_S (so nobody ever sees it flip
        to processing and back), and this round looks past that tenant or user.
        """
        while True:
            async with self.db.session() as session:
                claimed = await queue.claim_next(
                    session, self.id, self.lease_s, skip.tenants, skip.users
                )
                if claimed is None:
                    return None
                job = claimed.job
                if not await self._take_slot(
                    job, job.tenant_id, self.settings.max_concurrent_jobs_per_tenant
                ):
                    skip.tenants.append(job.tenant_id)
                elif claimed.user_job_cap is None or await self._take_slot(
                    job, queue.user_slots(job), claimed.user_job_cap
                ):
                    return claimed
                else:
                    await self._free_slot(job, job.tenant_id)
                    skip.users.append(job.user_id)
                await queue.give_back(session, job.id, self.id, job.attempts, delay_s=DEFER_S)

    async def _take_slot(self, job: JobRecord, owner: object, limit: int) -> bool:
        # Fail open always: with Redis down, jobs still run (uncapped), never stall.
        return await ratelimit.acquire_slot(
            self.redis,
            owner,
            queue.slot(job),
            limit,
            self.lease_s * 2,
            replaces=queue.previous_slot(job),
            fail_open=True,
            timeout_s=self.settings.rate_limit_redis_timeout_seconds,
        )

    async def _free_slot(self, job: JobRecord, owner: object) -> None:
        await ratelimit.release_slot(
            self.redis,
            owner,
            queue.slot(job),
            timeout_s=self.settings.rate_limit_redis_timeout_seconds,
        )

    async def _run_job(self, job: JobRecord, state: RunState, *, user_capped: bool) -> None:
        # Whose concurrent-job slots this attempt holds: its tenant's, and its user's when
        # their plan caps them (``_claim`` took both).
        owners: list[object] = [job.tenant_id]
        if user_capped:
            owners.append(queue.user_slots(job))
        logs.job_id.set(str(job.id))  # this task's context: its log lines name the job
        logs.tenant_id.set(str(job.tenant_id))
        metrics.JOBS_RUNNING.labels(job.kind).inc()
        lease = asyncio.create_task(self._keep_lease(job, state, owners), name=f"lease-{job.id}")
        try:
            report = await self.runner.run(job, self.id, state)
            if report.delivery_id is not None:
                self._spawn(announce.send_logged(self.db, self.settings, report.delivery_id))
        except Exception:  # noqa: BLE001 - the lease runs out; another worker retries
            log.exception("job %s: the worker could not finish it", job.id)
        finally:
            lease.cancel()
            metrics.JOBS_RUNNING.labels(job.kind).dec()
            for owner in owners:
                await self._free_slot(job, owner)
            # This worker may have claimed the job again after this attempt's lease ran
            # out (its renewals failed): then the entries are the new attempt's, and stay.
            if self.claimed.get(job.id) is job:
                self.states.pop(job.id, None)
                self.claimed.pop(job.id, None)
                self.running.pop(job.id, None)
            if self._announced > 0:
                self._wake.set()  # a slot is free for what may be waiting

    async def _keep_lease(self, job: JobRecord, state: RunState, owners: list[object]) -> None:
        # A third of the lease, and at least once a second: the renewal also publishes
        # the job's progress to whoever polls it.
        interval = max(0.2, min(self.lease_s / 3, 1.0))
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.db.session() as session:
                    cancel = await queue.renew_lease(
                        session, job.id, self.id, job.attempts, self.lease_s, state.progress
                    )
            except Exception:  # noqa: BLE001 - a hiccup; the finish guard keeps money safe
                log.warning("job %s: lease renewal failed", job.id, exc_info=True)
                continue
            if cancel is None:
                if not state.finishing:
                    log.warning("job %s: lease lost; stopping", job.id)
                    state.lost = True
                    state.cancel.set()
                return
            if cancel:
                state.cancel_requested = True
                state.cancel.set()
            for owner in owners:
                await ratelimit.renew_slot(
                    self.redis,
                    owner,
                    queue.slot(job),
                    self.lease_s * 2,
                    timeout_s=self.settings.rate_limit_redis_timeout_seconds,
                )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- shutdown ----------------------------------------------------------------------------

    async def _shutdown(self, listener: PgListener, loops: list[asyncio.Task[None]]) -> None:
        self._stopping = True
        if self.running:
            log.info("worker %s: waiting for %d running job(s)", self.id, len(self.running))
            await asyncio.wait(set(self.running.values()), timeout=self.shutdown_grace_s)
        # Whatever still runs goes back to the queue now, without using up an attempt.
        leftover = [(self.claimed[i], t) for i, t in self.running.items() if i in self.claimed]
        for job, _task in leftover:
            state = self.states.get(job.id)
            if state is not None:
                state.lost = True
                state.cancel.set()
        if leftover:
            await asyncio.wait({task for _, task in leftover}, timeout=STOP_WAIT_S)
            # A job still running even now keeps its lease, which runs out once this process
            # is gone: given back, it could be claimed again under the same attempt number
            # (the give-back does not count one) while this attempt still writes its files.
            async with self.db.session() as session:
                for job, task in leftover:
                    given = task.done() and await queue.give_back(
                        session, job.id, self.id, job.attempts
                    )
                    if given:
                        await repo.notify(session, repo.JOBS_CHANNEL, job.kind)
                        log.info("job %s: given back to the queue (worker stopping)", job.id)
                    else:
                        log.warning(
                            "job %s: still running at shutdown; another worker retries it "
                            "once its lease runs out",
                            job.id,
                        )
        for task in loops:
            task.cancel()
        for task in [*loops, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        await listener.stop()
        with contextlib.suppress(Exception):
            async with self.db.session() as session:
                await queue.remove_worker(session, self.id)
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._own_redis:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        log.info("worker %s stopped", self.id)

    # -- housekeeping --------------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        while True:
            try:
                await self.housekeeping()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next round retries
                log.exception("jobs housekeeping failed")
            await asyncio.sleep(self.settings.jobs_housekeeping_seconds)

    async def housekeeping(self) -> None:
        """Heartbeat, queue gauges, the audit chain's anchor, abandoned jobs and orphaned
        webhooks (one round), the usage rollups, and the ledger verification when it is this
        worker's turn."""
        interval = self.settings.jobs_housekeeping_seconds
        try:
            async with self.db.session() as session:
                await queue.heartbeat(
                    session,
                    self.id,
                    hostname=socket.gethostname()[:255],
                    pid=os.getpid(),
                    concurrency=self.concurrency,
                    running=len(self.running),
                )
                await queue.refresh_cluster_gauges(session, interval, self.lease_s)
        except Exception:
            app_metrics.DATABASE_UP.set(0)
            raise
        app_metrics.DATABASE_UP.set(1)
        # An idle worker makes no slot calls: this keeps its swapmeter_redis_up current.
        timeout_s = self.settings.rate_limit_redis_timeout_seconds
        if await ratelimit.ping(self.redis, timeout_s=timeout_s) is None:
            await ledger_verify.refresh_gauges(self.redis)
            async with self.db.session() as session:
                self._audit_head = await self.anchors.publish(session, self._audit_head)
            if not self._verifying:  # a long check must not hold up the heartbeat
                self._verifying = True
                self._spawn(self._verify_ledger())

        for delivery in await end_abandoned_jobs(self.settings, self.db, self.store, self.redis):
            self._spawn(announce.send_logged(self.db, self.settings, delivery))
        for delivery in await announce.claim_stale(self.db, self.settings):
            self._spawn(announce.send_logged(self.db, self.settings, delivery))
        # Every round, so that the deltas a usage report reads besides its rollups stay
        # few (one worker folds at a time; the others skip).
        await fold_usage(self.db)
        if not self._refilling:  # a plan of many users must not hold up the heartbeat
            self._refilling = True
            self._spawn(self._refill_plans())

    async def _refill_plans(self) -> None:
        """The plans whose daily refill time has come (billing.daily_refill)."""
        try:
            await daily_refill.refill_due_plans(self.db)
        except Exception:  # noqa: BLE001 - the next round retries
            log.exception("daily refill round failed")
        finally:
            self._refilling = False

    async def _verify_ledger(self) -> None:
        try:
            await ledger_verify.verify_if_due(
                self.db,
                self.redis,
                self.settings.ledger_verify_interval_seconds,
                self.id,
                anchors=self.anchors,
            )
        except Exception:  # noqa: BLE001 - the next turn retries
            log.exception("ledger verification failed to run")
        finally:
            self._verifying = False

    async def _cleanup_loop(self) -> None:
        while True:
            try:
                await run_cleanup(self.settings, self.db, self.store)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next round retries
                log.exception("cleanup failed")
            await asyncio.sleep(self.settings.results_cleanup_interval_seconds)


async def run_worker_process(
    settings: Settings,
    *,
    concurrency: int | None = None,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
) -> None:
    """``swapmeter worker``: run until SIGTERM or Ctrl-C, then stop claiming, let running
    jobs finish (30 s at most) and give the rest back to the queue. Serves its metrics
    (queue, run times, inference stages, Tokens it captured, GPUs) on ``metrics_host``:
    ``metrics_port`` for Prometheus (behind ``SWAPMETER_METRICS_TOKEN`` when set): one
    port per worker process (a second one on a host needs its own)."""
    import signal

    port = settings.jobs_worker_metrics_port if metrics_port is None else metrics_port
    host = metrics_host or settings.jobs_worker_metrics_host
    if port:
        from app.core import gpu_metrics

        gpu_metrics.register()
        try:
            app_metrics.serve_metrics(host, port, settings.metrics_token)
        except OSError as exc:  # another worker on this host has it: run without
            log.warning("worker metrics not served on %s:%d: %s", host, port, exc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    db = Database(settings.database_url, pool_size=max(4, 2 * (concurrency or 1) + 2))
    try:
        await Worker(settings, db, concurrency=concurrency).run(stop)
    finally:
        await db.dispose()
