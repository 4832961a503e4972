"""A tenant's jobs as operators see them: the list, one job with its hold and webhook
deliveries, and an operator's cancel. The reads are ``app.jobs.service``'s (indexed
keyset pages); the cancel is ``app.jobs.settle``'s, the owner's own, audited here.
Refunds are ``admin.corrections.refund_job``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from admin import repository
from app.auth.dependencies import AdminPrincipal, ensure_tenant_access
from app.core import audit
from app.core.errors import NotFound
from app.jobs import repository as job_rows
from app.jobs import service as jobs
from app.jobs import settle
from app.jobs.repository import JobRecord
from app.tenancy import service as tenancy
from app.webhooks import repository as webhooks
from billing import holds
from billing.holds import HoldView

JOB_STATUSES = ("queued", "processing", "succeeded", "failed", "canceled")
JOB_KINDS = ("image", "video")


@dataclass(frozen=True)
class JobFilters:
    """What an operator narrows a tenant's jobs to (None: any)."""

    status: str | None = None
    kind: str | None = None
    user: str | None = None  # the user's external id
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class JobRow:
    job: JobRecord
    user: str | None  # external id


@dataclass(frozen=True)
class JobPage:
    items: list[JobRow]
    next_cursor: str | None


async def list_jobs(
    session: AsyncSession,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    filters: JobFilters,
    *,
    cursor: str | None,
    limit: int,
) -> JobPage:
    """A page of the tenant's jobs, newest first. An unknown user is 404 UserNotFound."""
    ensure_tenant_access(admin, tenant_id, write=False)
    await tenancy.get_tenant(session, tenant_id)
    user_id = None
    if filters.user:
        user_id = (await tenancy.get_user(session, tenant_id, filters.user)).id
    rows, next_cursor = await jobs.list_tenant_jobs(
        session,
        tenant_id,
        user_id=user_id,
        status=filters.status,
        kind=filters.kind,
        since=filters.since,
        until=filters.until,
        cursor=cursor,
        limit=limit,
    )
    names = await repository.external_ids_of_users(session, {j.user_id for j in rows})
    return JobPage([JobRow(j, names.get(j.user_id)) for j in rows], next_cursor)


@dataclass(frozen=True)
class JobView:
    job: JobRecord
    user: str | None
    hold: HoldView | None  # None: not metered
    deliveries: list[dict[str, Any]]

    @property
    def refundable(self) -> int:
        """Tokens charged and not refunded yet (what a refund may give back)."""
        if self.hold is None or self.hold.status != "captured":
            return 0
        return self.hold.captured - self.hold.refunded

    @property
    def ended(self) -> bool:
        return self.job.status in ("succeeded", "failed", "canceled")


async def job_tenant(session: AsyncSession, admin: AdminPrincipal, job_id: uuid.UUID) -> uuid.UUID:
    """The tenant of a job, for operators who see every tenant; NotFound otherwise."""
    if not admin.sees_every_tenant:
        raise NotFound("Job not found")
    job = await job_rows.get_job(session, job_id)
    if job is None:
        raise NotFound("Job not found")
    return job.tenant_id


async def get_job(
    session: AsyncSession, admin: AdminPrincipal, tenant_id: uuid.UUID, job_id: uuid.UUID
) -> JobView:
    """The job with its owner, its hold (held, captured, refunded) and its webhook
    deliveries (``GET /jobs/{id}/webhook-deliveries``'s)."""
    ensure_tenant_access(admin, tenant_id, write=False)
    job = await jobs.get_tenant_job(session, tenant_id, job_id)
    hold = None
    if job.hold_reference is not None:
        try:
            hold = await holds.get_hold(session, tenant_id, job.hold_reference)
        except NotFound:
            hold = None
    deliveries = [dict(r._mapping) for r in await webhooks.deliveries_of_job(session, job_id)]
    user = await repository.external_id_of_user(session, job.user_id)
    return JobView(job, user, hold, deliveries)


async def cancel_job(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    *,
    webhook_lease_s: float,
) -> tuple[JobRecord, bool]:
    """Cancel the job as its owner would (``POST /jobs/{id}/cancel``): queued, canceled
    and released at once; processing, stopped at its next batch of frames. Already
    canceled: unchanged. Succeeded or failed: 409 JobFinished. Returns the job and
    whether it was canceled before it ran (its inputs may go once this commits)."""
    ensure_tenant_access(admin, tenant_id, write=True)
    was = await jobs.get_tenant_job(session, tenant_id, job_id)
    job = await settle.cancel_job(session, was.user_id, job_id, webhook_lease_s=webhook_lease_s)
    if was.status != "canceled":
        await audit.record(
            session,
            request=request,
            actor=admin,
            action="job.cancel",
            tenant_id=tenant_id,
            target=f"job:{job_id}",
            details={"status": {"from": was.status, "to": job.status}},
        )
    return job, was.status == "queued" and job.status == "canceled"
