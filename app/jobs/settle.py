"""The job's side of settlement: finishing a job (its outcome and what it is charged),
canceling one, and ending those nobody will run. Billing settles the hold
(``billing.holds``): in the very statement that finishes the job (``capture_with``), or
by releasing it all (a job canceled before it ran, or abandoned).

Money rules, all enforced here and nowhere else:

- Finishing a job, capturing (or releasing) its hold and writing its result are one
  transaction, guarded by the worker's lease (``finish_job``).
- What a job is charged (``charge_for``): a succeeded job, its whole hold, unless it is
  a video that delivered fewer frames than its probe listed (a damaged upload whose last
  frames do not decode: ``Outcome.short``). Such a video, or one canceled or failing on
  its own media part-way: the seconds *delivered*, that is the seconds of video fully
  processed (frames handed to the encoder / fps), each started second at the job's unit
  price, times the peak multiplier it was held at (rounded up once, as its hold was),
  never more than the hold. Anything else (no face, undecodable input, our own
  failure, a lost worker, an image canceled before its result was committed) is
  released in full.

No inference imports here: the runner (app/jobs/runner.py) probes media and runs the
engine, and hands this module plain numbers. Services flush; the boundary commits.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Conflict, JobFinished
from app.jobs import repository as repo
from app.jobs import service
from app.jobs.models import FINAL_STATUSES
from app.jobs.repository import JOB_COLUMNS, JobRecord
from app.webhooks import repository as webhooks
from billing import holds, pricing

# Failures that are ours, not the user's media: never charged, even part-way.
OUR_FAULT_CODES = frozenset(
    {
        "InternalError",
        "InferenceFailed",
        "WorkerLost",
        "ModelNotInstalled",
        "ModelLicenceRefused",
        "ModelHashMismatch",
        "ModelInvalid",
    }
)


CANCEL_TRIES = 3  # see cancel_job


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as the runner saw it.

    ``storing``: the write of ``result_key``, when it is still running. The result is
    described in ``result`` already; the job's transaction commits only once the write
    succeeded (``finish_job``), so a job never says succeeded with its result missing.
    """

    status: str  # succeeded | failed | canceled
    seconds_done: float | None = None
    # A succeeded video that delivered fewer frames than its probe listed: charged the
    # seconds delivered, not the hold (``charge_for``).
    short: bool = False
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = None
    result_key: str | None = None
    storing: asyncio.Future[Any] | None = field(default=None, compare=False, repr=False)


async def cancel_job(
    session: AsyncSession, user_id: int, job_id: uuid.UUID, *, webhook_lease_s: float
) -> JobRecord:
    """Queued: canceled now, hold released in full. Processing: flagged; the worker stops
    at its next batch of frames and charges the delivered seconds. Already canceled: the
    job unchanged. Succeeded or failed: Conflict (409), nothing changes."""
    # A job may move between queued and processing while this runs (a worker claims it,
    # or gives it back as it shuts down): look again rather than call it finished.
    for _ in range(CANCEL_TRIES):
        job = await cancel_queued(session, job_id, user_id)
        if job is not None:
            await _release_hold(session, job)
            await _announce_end(session, job, webhook_lease_s=0.0 if job.webhook_url else None)
            return job
        job = await request_cancel(session, job_id, user_id)
        if job is not None:
            await repo.notify(session, repo.JOB_CANCEL_CHANNEL, str(job.id))
            return job
        job = await service.get_job(session, user_id, job_id)
        if job.status == "canceled":
            return job
        if job.status in FINAL_STATUSES:
            raise JobFinished(f"The job already {job.status}; it can no longer be canceled")
    raise Conflict("The job kept changing state; retry the cancel")


def charge_for(job: JobRecord, outcome: Outcome) -> int:
    """Tokens to capture for this outcome (see the module docstring)."""
    if not job.metered:
        return 0
    if outcome.status == "succeeded" and not outcome.short:
        return job.tokens_held
    if job.kind != "video" or not outcome.seconds_done or outcome.error_code in OUR_FAULT_CODES:
        return 0
    delivered = pricing.video_price(job.unit_price, outcome.seconds_done)
    return min(job.tokens_held, pricing.at_multiplier(delivered, job.multiplier))


async def _release_hold(session: AsyncSession, job: JobRecord) -> None:
    """Give a job's whole hold back (a job that ended before it ran, or without a worker),
    the reason being its error code or status."""
    if job.metered and job.hold_reference is not None:
        await holds.release(
            session, job.tenant_id, job.hold_reference, reason=job.error_code or job.status
        )


async def _announce_end(
    session: AsyncSession, job: JobRecord, *, webhook_lease_s: float | None
) -> int | None:
    """Queue the webhook of a job that just became final, if it has one. (Whoever waits
    for the job is woken by the database itself: see migration 0005.)"""
    if job.webhook_url and webhook_lease_s is not None:
        return await webhooks.insert_delivery(
            session, job.id, job.tenant_id, job.webhook_url, webhook_lease_s
        )
    return None


async def finish_job(
    session: AsyncSession,
    job: JobRecord,
    worker_id: str,
    outcome: Outcome,
    *,
    webhook_lease_s: float,
) -> tuple[JobRecord, int | None] | None:
    """Record the outcome and settle the hold, in the caller's transaction.

    None when this worker no longer holds the job's lease: nothing was written, and the
    caller must discard its output. Otherwise the final job and its webhook delivery id.
    A metered job whose hold is no longer held (settled by someone else) is a Conflict:
    the caller's transaction rolls back and the job is not finished. When the result is
    still being written (``outcome.storing``), this returns once it is stored, and raises
    what the write raised (the caller's transaction must then roll back).
    """
    charge = charge_for(job, outcome)
    finished = await holds.capture_with(
        session,
        FINISH,
        repo.RECORD_COLUMNS,
        finish_params(
            job,
            worker_id,
            status=outcome.status,
            seconds_done=outcome.seconds_done,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            result=outcome.result,
            result_key=outcome.result_key,
        ),
        tenant_id=job.tenant_id,
        reference=job.hold_reference,
        amount=charge,
        reason=None if charge else (outcome.error_code or outcome.status),
    )
    if finished is None:
        return None
    row, settled = finished
    final = JobRecord.from_row(row)
    if final.metered and final.hold_reference is not None and settled.hold_id is None:
        raise Conflict(f"The hold {final.hold_reference!r} of job {final.id} is not held")
    delivery = await _announce_end(session, final, webhook_lease_s=webhook_lease_s)
    if outcome.storing is not None:
        await outcome.storing
    return final, delivery


async def end_abandoned_job(
    session: AsyncSession, *, webhook_lease_s: float, queue_timeout_s: float = 0.0
) -> tuple[JobRecord, int | None] | None:
    """Fail (WorkerLost, QueueTimeout) or cancel one job no worker will run and release
    its hold (``end_abandoned``); None when there is none. One job per transaction:
    each locks one hold and one account, keeping billing's lock order (several releases
    in one transaction could lock accounts out of id order and deadlock with a bulk
    recharge)."""
    ended = await end_abandoned(session, limit=1, queue_timeout_s=queue_timeout_s)
    if not ended:
        return None
    job = ended[0]
    await _release_hold(session, job)
    return job, await _announce_end(session, job, webhook_lease_s=webhook_lease_s)


# -- statements ------------------------------------------------------------------------------


# Write the outcome, guarded by the lease: billing's ``holds.capture_with`` settles the
# job's hold in the same statement, only when this updated the job's row.
FINISH = f"""
    UPDATE jobs
    SET status = CAST(:status AS varchar), tokens_charged = :amount,
        -- Stopped part-way: the share delivered (and charged), not the last report.
        progress = CASE WHEN CAST(:status AS varchar) = 'succeeded' THEN 1.0
                        WHEN CAST(:seconds_done AS float8) IS NOT NULL AND target_seconds > 0
                        THEN least(1.0, CAST(:seconds_done AS float8) / target_seconds)
                        ELSE progress END,
        seconds_done = :seconds_done, error_code = :error_code,
        error_message = :error_message, result = CAST(:result AS jsonb),
        result_key = :result_key, finished_at = now(), leased_until = NULL
    WHERE id = :id AND worker_id = :worker_id AND attempts = :attempt
      AND status = 'processing'
    RETURNING {JOB_COLUMNS}
"""


def finish_params(
    job: JobRecord,
    worker_id: str,
    *,
    status: str,
    seconds_done: float | None,
    error_code: str | None,
    error_message: str | None,
    result: dict[str, Any] | None,
    result_key: str | None,
) -> dict[str, Any]:
    """FINISH's own parameters (its ``:amount``, the Tokens charged, is billing's)."""
    return {
        "id": job.id,
        "worker_id": worker_id,
        "attempt": job.attempts,
        "status": status,
        "seconds_done": seconds_done,
        "error_code": error_code,
        "error_message": error_message,
        "result": repo.to_json(result),
        "result_key": result_key,
    }


async def cancel_queued(session: AsyncSession, job_id: uuid.UUID, user_id: int) -> JobRecord | None:
    """Cancel a job no worker holds yet. A claim in progress holds the row lock: this
    waits for it, then finds the job processing and matches nothing."""
    row = (
        await session.execute(
            text(
                f"""
                UPDATE jobs
                SET status = 'canceled', cancel_requested_at = now(), finished_at = now(),
                    error_code = 'Canceled', error_message = 'Canceled before it started'
                WHERE id = :id AND user_id = :user_id AND status = 'queued'
                RETURNING {JOB_COLUMNS}
                """
            ),
            {"id": job_id, "user_id": user_id},
        )
    ).first()
    return repo.record_or_none(row)


async def request_cancel(
    session: AsyncSession, job_id: uuid.UUID, user_id: int
) -> JobRecord | None:
    """Flag a running job; its worker stops at the next batch of frames."""
    row = (
        await session.execute(
            text(
                f"""
                UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, now())
                WHERE id = :id AND user_id = :user_id AND status = 'processing'
                RETURNING {JOB_COLUMNS}
                """
            ),
            {"id": job_id, "user_id": user_id},
        )
    ).first()
    return repo.record_or_none(row)


async def end_abandoned(
    session: AsyncSession, limit: int = 100, *, queue_timeout_s: float = 0.0
) -> list[JobRecord]:
    """Jobs nobody will run, ended here in one statement (the caller settles their holds):

    - processing, its lease run out with no attempt left: failed, WorkerLost; or with a
      cancel pending: canceled;
    - queued (or its lease run out) while its tenant is suspended: canceled (a suspension
      stops new work; jobs running on a live worker finish);
    - when ``queue_timeout_s`` > 0, still queued that long after it was submitted: failed,
      QueueTimeout.
    """
    rows = await session.execute(
        text(
            f"""
            WITH lost AS (
                SELECT j.id,
                       CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'Canceled'
                            WHEN j.status = 'processing' AND j.attempts >= j.max_attempts
                                THEN 'WorkerLost'
                            WHEN t.status <> 'active' THEN 'Suspended'
                            ELSE 'QueueTimeout' END AS why
                FROM jobs j JOIN tenants t ON t.id = j.tenant_id
                WHERE j.status IN ('queued', 'processing')
                  AND ((j.status = 'processing' AND j.leased_until < now()
                        AND (j.attempts >= j.max_attempts OR j.cancel_requested_at IS NOT NULL
                             OR t.status <> 'active'))
                       OR (j.status = 'queued' AND t.status <> 'active')
                       OR (j.status = 'queued' AND :queue_timeout > 0
                           AND j.created_at < now() - make_interval(secs => :queue_timeout)))
                ORDER BY j.created_at, j.id
                LIMIT :limit
                FOR UPDATE OF j SKIP LOCKED
            )
            UPDATE jobs j
            SET status = CASE WHEN lost.why IN ('WorkerLost', 'QueueTimeout') THEN 'failed'
                              ELSE 'canceled' END,
                error_code = CASE WHEN lost.why = 'Suspended' THEN 'Canceled' ELSE lost.why END,
                error_message = CASE lost.why
                    WHEN 'WorkerLost' THEN 'The workers running this job stopped '
                         || j.attempts || ' time(s); its Tokens were released'
                    WHEN 'Canceled' THEN 'Canceled; its worker stopped before it could confirm'
                    WHEN 'Suspended' THEN 'Canceled: the tenant was suspended; its '
                         || 'Tokens were released'
                    ELSE :queue_message END,
                cancel_requested_at = CASE WHEN lost.why = 'Suspended' THEN now()
                                           ELSE j.cancel_requested_at END,
                finished_at = now(), leased_until = NULL, run_after = NULL
            FROM lost WHERE j.id = lost.id
            RETURNING {", ".join("j." + c.strip() for c in JOB_COLUMNS.split(","))}
            """
        ),
        {
            "limit": limit,
            "queue_timeout": queue_timeout_s,
            "queue_message": (
                f"No worker ran this job within {queue_timeout_s / 3600:g} h of its "
                "submission; its Tokens were released"
            ),
        },
    )
    return [JobRecord.from_row(r) for r in rows]
