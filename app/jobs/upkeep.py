"""Upkeep every worker shares, and API processes in part: ending the jobs nobody will run
(their holds released), and the periodic cleanup (expired results, stray temporary
files, expired Idempotency-Keys, expired grant Tokens, forgotten workers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from pathlib import Path

from redis.asyncio import Redis

from app.core import ratelimit, storage
from app.core.db import Database
from app.core.idempotency.service import purge_expired_keys
from app.core.settings import Settings
from app.core.storage import ResultStore
from app.jobs import metrics, queue, settle
from app.jobs.media import scratch_root
from app.jobs.results import delete_stored
from billing.maintenance import expire_due_grants

log = logging.getLogger(__name__)

ABANDONED_PER_ROUND = 100  # jobs nobody will run again, ended per housekeeping round


STALE_WORKER_S = 24 * 3600  # heartbeat rows older than this are deleted


SCRATCH_MAX_AGE_S = 24 * 3600  # temporary job files older than this are strays


async def end_abandoned_jobs(
    settings: Settings, db: Database, store: ResultStore, redis: Redis
) -> list[int]:
    """End the jobs nobody will run (``settle.end_abandoned_job``: WorkerLost,
    QueueTimeout, a pending cancel), up to ABANDONED_PER_ROUND, one per transaction: their
    holds released, inputs deleted, tenant slots freed. Returns their webhook deliveries,
    for the caller to send."""
    sends: list[int] = []
    for _ in range(ABANDONED_PER_ROUND):
        async with db.session() as session:
            ended = await settle.end_abandoned_job(
                session,
                webhook_lease_s=settings.jobs_webhook_lease_seconds,
                queue_timeout_s=settings.jobs_queue_timeout_seconds,
            )
        if ended is None:
            break
        job, delivery = ended
        log.warning("job %s ended as %s (%s)", job.id, job.status, job.error_code)
        metrics.job_finished(job.kind, job.status, job.error_code, None)
        await delete_stored(store, job.source_key, job.target_key)
        await ratelimit.release_slot(
            redis,
            job.tenant_id,
            queue.slot(job),
            timeout_s=settings.rate_limit_redis_timeout_seconds,
        )
        if delivery is not None:
            sends.append(delivery)
    return sends


async def run_cleanup(settings: Settings, db: Database, store: ResultStore) -> None:
    """One round of the periodic cleanup (safe to run in several processes at once). Each
    step runs even when another failed: a result that cannot be deleted must not stop
    grant Tokens from expiring."""

    async def results() -> None:
        await storage.cleanup(store, timedelta(seconds=settings.results_retention_seconds))

    async def scratch() -> None:
        await asyncio.to_thread(sweep_scratch, scratch_root(settings), SCRATCH_MAX_AGE_S)

    async def keys_and_workers() -> None:
        async with db.session() as session:
            purged = await purge_expired_keys(session, ttl_hours=settings.idempotency_ttl_hours)
            forgotten = await queue.forget_dead_workers(session, STALE_WORKER_S)
        if purged or forgotten:
            log.info("cleanup: %d idempotency keys, %d dead workers removed", purged, forgotten)

    async def grants() -> None:
        expired = await expire_due_grants(db)
        if expired.grants:
            log.info("cleanup: %d grant lots expired (%d Tokens)", expired.grants, expired.tokens)

    for step in (results, scratch, keys_and_workers, grants):
        try:
            await step()
        except Exception:  # noqa: BLE001 - the next round retries this step
            log.exception("cleanup step %s failed", step.__name__)


def sweep_scratch(root: Path, max_age_s: float) -> int:
    """Remove job scratch files and folders left by crashed processes.

    Ages are read before anything is deleted: removing a file refreshes its folder's
    mtime, which would otherwise make every emptied folder look young.
    """
    if not root.is_dir():
        return 0
    cutoff = time.time() - max_age_s
    entries = []
    for path in root.rglob("*"):
        try:
            entries.append((path, path.stat().st_mtime))
        except OSError:
            continue
    removed = 0
    for path, mtime in sorted(entries, key=lambda e: len(e[0].parts), reverse=True):
        if mtime >= cutoff or path.parent == root and path.name == "uploads":
            continue
        try:
            if path.is_dir():
                path.rmdir()  # only once empty: younger files inside keep it
            else:
                path.unlink()
            removed += 1
        except OSError:
            continue
    return removed
