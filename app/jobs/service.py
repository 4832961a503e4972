"""A job as its owner sees it: reading one's jobs and the contract's job object (GET
/jobs/{id}, webhooks) and 202 answer.

The jobs domain, by concern: ``intake`` (price, hold and queue a swap), ``queue`` (claims,
leases, workers), ``settle`` (finish, cancel, abandoned jobs: what a job is charged),
``results`` (the result store, signed links, downloads), ``events`` (waiting for a
job's end), ``media`` (what an upload is, before the hold), ``runner`` and ``worker``
(the worker side: the engine runs there and nowhere else), ``upkeep`` (what every worker,
and API processes in part, keep doing).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import InvalidCursor, NotFound
from app.jobs import repository as repo
from app.jobs.repository import JobRecord
from billing.pricing import multiplier_json

# -- shaping -------------------------------------------------------------------------------


def job_urls(job_id: uuid.UUID) -> dict[str, str]:
    base = f"/api/v1/jobs/{job_id}"
    return {"get": base, "cancel": f"{base}/cancel", "result": f"{base}/result"}


def _iso(value: datetime | None) -> str | None:
    """UTC with a Z, the form pydantic gives the same instant (GET and webhooks agree)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def job_json(job: JobRecord) -> dict[str, Any]:
    """The contract's job object (GET /jobs/{id}, webhooks), JSON-ready."""
    error = None
    if job.status in ("failed", "canceled") and job.error_code:
        error = {"code": job.error_code, "message": job.error_message or job.error_code}
    return {
        "id": str(job.id),
        "status": job.status,
        "progress": round(min(1.0, max(0.0, job.progress)), 4),
        "kind": job.kind,
        "tokens_held": job.tokens_held,
        "tokens_charged": job.tokens_charged,
        "error": error,
        "result": job.result if job.status == "succeeded" else None,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "price_version": job.price_version,
        "multiplier": multiplier_json(job.multiplier),
        "target_seconds": job.target_seconds,
        "seconds_done": job.seconds_done,
        "cancel_requested": job.cancel_requested_at is not None,
        "urls": job_urls(job.id),
    }


def accepted_json(job: JobRecord) -> dict[str, Any]:
    """The 202 answer: queued, with where to poll and how to cancel."""
    return {
        "status": "queued",
        "job_id": str(job.id),
        "tokens_held": job.tokens_held,
        "multiplier": multiplier_json(job.multiplier),
        "urls": job_urls(job.id),
    }


# -- cursors -------------------------------------------------------------------------------

# ``<created_at, microseconds since 1970>-<job id, hex>``: the schema's pattern and the
# server's test are one (empty: the first page).
JOB_CURSOR_PATTERN = r"^(?:[0-9]{1,16}-[0-9a-f]{32})?$"
_JOB_CURSOR_RE = re.compile(JOB_CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_cursor(job: JobRecord) -> str:
    """The keyset position after ``job`` in a newest-first list of jobs."""
    return f"{(job.created_at - _EPOCH) // _MICROSECOND}-{job.id.hex}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """A cursor ``encode_cursor`` made; anything else is InvalidCursor."""
    if _JOB_CURSOR_RE.fullmatch(cursor) is None:
        raise InvalidCursor("cursor is not one this API returned")
    micros, _, job_id = cursor.partition("-")
    return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(hex=job_id)


# -- reading -------------------------------------------------------------------------------


async def get_job(session: AsyncSession, user_id: int, job_id: uuid.UUID) -> JobRecord:
    """The caller's job; another user's job is NotFound, never Forbidden."""
    job = await repo.get_job(session, job_id, user_id=user_id)
    if job is None:
        raise NotFound("Job not found")
    return job


async def list_jobs(
    session: AsyncSession,
    user_id: int,
    *,
    status: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[JobRecord]:
    return await repo.list_jobs(session, user_id, status=status, before=before, limit=limit)


async def get_tenant_job(
    session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID
) -> JobRecord:
    """One of the tenant's jobs (operators); another tenant's job is NotFound."""
    job = await repo.get_job(session, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound("Job not found")
    return job


async def list_tenant_jobs(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    user_id: int | None = None,
    status: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int,
) -> tuple[list[JobRecord], str | None]:
    """A page of the tenant's jobs, newest first, and the cursor of the next page (None:
    the last page)."""
    before = decode_cursor(cursor) if cursor else None
    jobs = await repo.list_tenant_jobs(
        session,
        tenant_id,
        user_id=user_id,
        status=status,
        kind=kind,
        since=since,
        until=until,
        before=before,
        limit=limit + 1,
    )
    next_cursor = encode_cursor(jobs[limit - 1]) if len(jobs) > limit else None
    return jobs[:limit], next_cursor
