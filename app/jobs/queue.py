"""The queue and its leases: claiming a job, renewing and giving back its lease, and the
workers that hold them (heartbeats), with the gauges that count all of it.

The queue is the ``jobs`` table. A worker claims the oldest open job it may run with
``FOR UPDATE SKIP LOCKED`` in one statement (two workers never wait on, or take, the same
row), and every later write of that worker names its lease (``worker_id`` and
``attempts``): a worker that lost its lease, because it stalled past ``leased_until`` and
another worker took the job, matches no row and so can neither finish the job nor charge
for it (``settle.finish_job``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core import ratelimit
from app.jobs import metrics
from app.jobs.repository import JOB_COLUMNS, JobRecord

# -- claim, lease, give back -----------------------------------------------------------------

# Take the oldest open job this worker may run, in one statement: queued ones, and
# processing ones whose worker let the lease run out (it died or stalled), while attempts
# are left; not held back by run_after (its tenant was at the concurrency cap), not of a
# tenant this worker just found at its cap, nor of a suspended tenant (housekeeping
# cancels those). SKIP LOCKED: two workers never wait on, or
# take, the same row. The claim does not wait for its WAL to reach the disk
# (synchronous_commit off, for this transaction only): lost in a database crash, the job
# is simply queued again, and its lease guard keeps the lost claimant from finishing it.
# It also answers the cap of the job's user's plan on concurrent jobs (null: none), which
# the worker enforces with a slot of that user (``user_slots``), as the tenant's.
_CLAIM_NEXT = text(
    f"""
    UPDATE jobs
    SET status = 'processing', attempts = attempts + 1, worker_id = :worker_id,
        leased_until = now() + make_interval(secs => :lease_s),
        started_at = coalesce(started_at, now()), run_after = NULL
    WHERE id = (
        SELECT id FROM jobs
        WHERE status IN ('queued', 'processing')
          AND (status = 'queued' OR leased_until < now())
          AND attempts < max_attempts
          AND cancel_requested_at IS NULL
          AND (run_after IS NULL OR run_after <= now())
          AND NOT (tenant_id = ANY(CAST(:skip_tenants AS uuid[])))
          AND NOT (user_id = ANY(CAST(:skip_users AS bigint[])))
          AND (SELECT status FROM tenants WHERE tenants.id = jobs.tenant_id) = 'active'
        ORDER BY created_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING {JOB_COLUMNS}, extract(epoch FROM now() - created_at) AS queue_wait_s,
              (SELECT p.max_concurrent_jobs FROM users u JOIN plans p ON p.id = u.plan_id
               WHERE u.id = jobs.user_id) AS user_job_cap,
              set_config('synchronous_commit', 'off', true) AS commit_mode
    """
)


@dataclass(frozen=True)
class Claimed:
    """A claimed job, how long it waited in the queue (seconds, by the database clock),
    and its user's cap on concurrent jobs (their plan's; None: no cap of their own)."""

    job: JobRecord
    queue_wait_s: float
    user_job_cap: int | None


async def claim_next(
    session: AsyncSession,
    worker_id: str,
    lease_s: float,
    skip_tenants: list[uuid.UUID],
    skip_users: list[int] | None = None,
) -> Claimed | None:
    """Lease the next job to ``worker_id`` (processing, one more attempt); None when idle.

    Jobs of the tenants in ``skip_tenants`` and the users in ``skip_users`` (found at
    their cap this round) are left in the queue.
    """
    row = (
        await session.execute(
            _CLAIM_NEXT,
            {
                "worker_id": worker_id,
                "lease_s": lease_s,
                "skip_tenants": skip_tenants,
                "skip_users": skip_users or [],
            },
        )
    ).first()
    if row is None:
        return None
    return Claimed(JobRecord.from_row(row), float(row.queue_wait_s), row.user_job_cap)


async def renew_lease(
    session: AsyncSession,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    lease_s: float,
    progress: float,
) -> bool | None:
    """Extend the lease and record progress. None: the lease is lost (stop, discard);
    otherwise whether the owner asked to cancel."""
    row = (
        await session.execute(
            text(
                """
                UPDATE jobs
                SET leased_until = now() + make_interval(secs => :lease_s),
                    progress = greatest(progress, least(:progress, 1.0))
                WHERE id = :id AND worker_id = :worker_id AND attempts = :attempt
                  AND status = 'processing'
                RETURNING cancel_requested_at IS NOT NULL AS cancel_requested
                """
            ),
            {
                "id": job_id,
                "worker_id": worker_id,
                "attempt": attempt,
                "lease_s": lease_s,
                "progress": progress,
            },
        )
    ).first()
    return None if row is None else bool(row.cancel_requested)


async def give_back(
    session: AsyncSession,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    *,
    delay_s: float = 0.0,
) -> bool:
    """Return a job this worker holds to the queue at once, the attempt not counted: on
    shutdown (instead of letting the lease run out), or when its tenant is at the
    concurrency cap (then held back ``delay_s``). A first attempt has not started.

    Not a job whose owner asked to cancel it (False): queued again it would never be
    claimed nor ended. It stays leased, and once the lease runs out housekeeping cancels
    it and releases its hold (``end_abandoned``)."""
    row = (
        await session.execute(
            text(
                """
                UPDATE jobs
                SET status = 'queued', attempts = attempts - 1, worker_id = NULL,
                    leased_until = NULL, progress = 0,
                    started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END,
                    run_after = CASE WHEN :delay > 0
                                     THEN now() + make_interval(secs => :delay) END
                WHERE id = :id AND worker_id = :worker_id AND attempts = :attempt
                  AND status = 'processing' AND cancel_requested_at IS NULL
                RETURNING id
                """
            ),
            {"id": job_id, "worker_id": worker_id, "attempt": attempt, "delay": delay_s},
        )
    ).first()
    return row is not None


def slot(job: JobRecord) -> str:
    """The tenant slot of this attempt at the job (``ratelimit.slot_holder``), held while
    it runs: a tenant runs at most its cap of jobs at once."""
    return ratelimit.slot_holder(job.id, job.attempts)


def user_slots(job: JobRecord) -> str:
    """Whose slots a job of a capped user takes besides its tenant's: that user's (the
    same holders, ``slot``, under a key of their own)."""
    return f"{job.tenant_id}:user:{job.user_id}"


def previous_slot(job: JobRecord) -> str | None:
    """The slot of the attempt whose lease ran out before this claim, if there was one."""
    return ratelimit.slot_holder(job.id, job.attempts - 1) if job.attempts > 1 else None


# -- the depth that load pricing reads ------------------------------------------------------

# Jobs waiting for a worker, cluster-wide: what ``swapmeter_jobs_in_queue`` reports, summed
# over kinds (jobs held back by their tenant's cap included: they are waiting too).
_QUEUED = text("SELECT count(*) FROM jobs WHERE status = 'queued'")


class QueueDepthCache:
    """The queue depth as this process last counted it, for load pricing: a swap under a
    peak price reads this, not the database, and the count runs at most once per
    ``max_age_s`` per process (a query of the small open-jobs index).

    Stale by up to ``max_age_s``: a swap may be priced by the depth of a second ago. While
    one request counts afresh, the others go on with the last count rather than each
    counting too (one query per process per period, whatever the traffic).
    """

    def __init__(self, max_age_s: float = 1.0) -> None:
        self.max_age_s = max_age_s
        self._depth: int | None = None
        self._counted_at = 0.0
        self._counting = False

    async def depth(self, executor: AsyncSession | AsyncConnection) -> int:
        fresh = time.monotonic() - self._counted_at < self.max_age_s
        if self._depth is not None and (fresh or self._counting):
            return self._depth
        self._counting = True
        try:
            depth = int((await executor.execute(_QUEUED)).scalar_one())
        finally:
            self._counting = False
        self._depth, self._counted_at = depth, time.monotonic()
        metrics.PRICING_QUEUE_DEPTH.set(depth)
        return depth

    def forget(self) -> None:
        """Count afresh at the next read."""
        self._depth = None


PROCESS_QUEUE_DEPTH = QueueDepthCache()


# -- workers and gauges ---------------------------------------------------------------------


async def open_counts(session: AsyncSession) -> list[Any]:
    """(kind, queued, processing, tokens_held, oldest_queued_s) over every open job: one
    scan of the small open index."""
    rows = await session.execute(
        text(
            """
            SELECT kind,
                   count(*) FILTER (WHERE status = 'queued') AS queued,
                   count(*) FILTER (WHERE status = 'processing') AS processing,
                   coalesce(sum(tokens_held), 0) AS tokens_held,
                   -- Waiting for a worker: not a job held back until run_after (its
                   -- tenant at its cap), which is no sign of missing workers.
                   coalesce(extract(epoch FROM now() - min(coalesce(run_after, created_at))
                                    FILTER (WHERE status = 'queued'
                                            AND (run_after IS NULL OR run_after <= now()))),
                            0) AS oldest_queued_s
            FROM jobs WHERE status IN ('queued', 'processing')
            GROUP BY kind
            """
        )
    )
    return list(rows)


async def stale_open_holds(session: AsyncSession, older_than_s: float) -> int:
    """Holds still open, older than ``older_than_s``, whose job is no longer queued or
    running: Tokens reserved that no worker will settle (``end_abandoned_job`` should have
    released them). Both sides are small partial indexes (open holds, open jobs)."""
    result = await session.execute(
        text(
            """
            SELECT count(*) FROM holds h
            WHERE h.status = 'held' AND h.created_at < now() - make_interval(secs => :age)
              AND NOT EXISTS (
                  SELECT 1 FROM jobs j
                  WHERE j.status IN ('queued', 'processing')
                    AND j.tenant_id = h.tenant_id AND j.hold_reference = h.reference)
            """
        ),
        {"age": older_than_s},
    )
    return int(result.scalar_one())


async def heartbeat(
    session: AsyncSession,
    worker_id: str,
    *,
    hostname: str,
    pid: int,
    concurrency: int,
    running: int,
) -> None:
    await session.execute(
        text(
            """
            INSERT INTO workers (id, hostname, pid, concurrency, running)
            VALUES (:id, :hostname, :pid, :concurrency, :running)
            ON CONFLICT (id) DO UPDATE
            SET running = excluded.running, concurrency = excluded.concurrency,
                last_seen_at = now()
            """
        ),
        {
            "id": worker_id,
            "hostname": hostname,
            "pid": pid,
            "concurrency": concurrency,
            "running": running,
        },
    )


async def remove_worker(session: AsyncSession, worker_id: str) -> None:
    await session.execute(text("DELETE FROM workers WHERE id = :id"), {"id": worker_id})


async def live_workers(session: AsyncSession, within_s: float) -> int:
    row = (
        await session.execute(
            text(
                "SELECT count(*) FROM workers "
                "WHERE last_seen_at > now() - make_interval(secs => :within)"
            ),
            {"within": within_s},
        )
    ).one()
    return int(row[0])


async def forget_dead_workers(session: AsyncSession, older_than_s: float) -> int:
    row = (
        await session.execute(
            text(
                "WITH gone AS (DELETE FROM workers "
                "WHERE last_seen_at < now() - make_interval(secs => :older) RETURNING 1) "
                "SELECT count(*) FROM gone"
            ),
            {"older": older_than_s},
        )
    ).one()
    return int(row[0])


async def refresh_cluster_gauges(
    session: AsyncSession, housekeeping_s: float, lease_s: float
) -> None:
    """The cluster-wide gauges (jobs queued and processing, the Tokens they hold, the
    oldest one's wait, live workers, holds left open) as the database has them now: every
    worker's housekeeping refreshes them, and so does an API process when scraped, so
    that no /metrics shows stale zeros."""
    counts = {row.kind: row for row in await open_counts(session)}
    live = await live_workers(session, within_s=max(15.0, 3 * housekeeping_s))
    for kind in metrics.KINDS:
        row = counts.get(kind)
        metrics.JOBS_IN_QUEUE.labels(kind).set(row.queued if row else 0)
        metrics.JOBS_PROCESSING.labels(kind).set(row.processing if row else 0)
        metrics.TOKENS_HELD.labels(kind).set(row.tokens_held if row else 0)
        metrics.OLDEST_QUEUED.labels(kind).set(float(row.oldest_queued_s) if row else 0.0)
    metrics.WORKERS_LIVE.set(live)
    metrics.HOLDS_STALE.set(await stale_open_holds(session, lease_s))
