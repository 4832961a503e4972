"""Jobs: /dashboard/jobs (a tenant's jobs by status, kind, user and time, a page at a
time) and a job's page (timeline, Tokens held and charged, error, result link, webhook
deliveries; cancel and refund).

Reads are ``admin.jobs``'s (indexed keyset pages, ``app.jobs.service``); the cancel is the
owner's own (``app.jobs.settle``), audited; the refund is ``admin.corrections``'s, keyed
by the Idempotency-Key its form carries, as the Admin API's refund route is.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Form, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from admin import corrections
from admin import jobs as admin_jobs
from admin import service as admin_service
from admin.dashboard.forms import keyed_write, new_key, optional_int, text_field, utc_time
from admin.dashboard.pages.tenants import form_problem
from admin.dashboard.security import (
    CurrentOperator,
    Operator,
    WriteOperator,
    chosen_tenant,
    require_write,
)
from admin.dashboard.web import FLASHES, PREFIX, page_router, render, see_other
from app.core.deps import DBSession
from app.core.errors import AppError, BadRequest
from app.jobs import results

router = page_router()
PAGE = 50  # jobs per page (at most 100 per the dashboard's rules)
JOBS = f"{PREFIX}/jobs"
TENANT_CHOICES = 500

FLASHES.update(
    {
        "job-canceled": "Job canceled: its held Tokens are released.",
        "job-cancel-requested": "Cancel requested: the worker stops at its next batch of frames.",
        "refund-applied": "Refund applied.",
        "refund-replayed": "This refund form was already sent: it was applied once, not again.",
    }
)

_FILTERS = ("status", "kind", "user", "from", "to")


# -- the list --------------------------------------------------------------------------------


@router.get(JOBS)
async def jobs_page(
    request: Request, operator: CurrentOperator, session: DBSession, cursor: str = ""
) -> Response:
    tenant_id = chosen_tenant(request, operator)
    sent = {name: request.query_params.get(name, "")[:300] for name in _FILTERS}
    tenants = []
    if operator.tenant_id is None:
        tenants = await admin_service.list_tenants(
            session, operator.admin, after_slug=None, limit=TENANT_CHOICES
        )
    page, error, status_code = None, None, 200
    if tenant_id is not None:
        try:
            page = await admin_jobs.list_jobs(
                session,
                operator.admin,
                tenant_id,
                _filters(sent),
                cursor=cursor or None,
                limit=PAGE,
            )
        except AppError as exc:
            if not form_problem(exc) and not _unknown_user(exc):
                raise
            error, status_code = exc.message, exc.status
    return render(
        request,
        "jobs.html",
        status_code=status_code,
        title="Jobs",
        tenants=tenants,
        tenant_id=tenant_id,
        filters=sent,
        statuses=admin_jobs.JOB_STATUSES,
        kinds=admin_jobs.JOB_KINDS,
        page=page,
        error=error,
        next_query=_next_query(tenant_id, sent, page.next_cursor if page else None),
    )


def _unknown_user(exc: AppError) -> bool:
    return exc.code == "UserNotFound"


def _filters(sent: dict[str, str]) -> admin_jobs.JobFilters:
    """The form's filters, checked: an unknown status or kind is 400 BadRequest, a bad
    time 400 InvalidTime, text with control characters 400 InvalidText."""
    status = sent["status"] or None
    kind = sent["kind"] or None
    if status is not None and status not in admin_jobs.JOB_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(admin_jobs.JOB_STATUSES)}")
    if kind is not None and kind not in admin_jobs.JOB_KINDS:
        raise BadRequest(f"kind must be one of {', '.join(admin_jobs.JOB_KINDS)}")
    return admin_jobs.JobFilters(
        status=status,
        kind=kind,
        user=text_field(sent["user"], "user", max_length=255) or None,
        since=utc_time(sent["from"], "from"),
        until=utc_time(sent["to"], "to", end_of_day=True),
    )


def _next_query(tenant_id: uuid.UUID | None, sent: dict[str, str], cursor: str | None) -> str:
    if cursor is None:
        return ""
    query = {k: v for k, v in sent.items() if v}
    if tenant_id is not None:
        query["tenant"] = str(tenant_id)
    return urlencode({**query, "cursor": cursor})


# -- one job ---------------------------------------------------------------------------------


async def _job_tenant(
    request: Request, operator: Operator, session: AsyncSession, job_id: uuid.UUID
) -> uuid.UUID:
    """``?tenant=`` (checked), the operator's own tenant, or, for operators of every
    tenant, the job's."""
    tenant_id = chosen_tenant(request, operator)
    if tenant_id is None:
        tenant_id = await admin_jobs.job_tenant(session, operator.admin, job_id)
    return tenant_id


def job_url(job_id: uuid.UUID, tenant_id: uuid.UUID) -> str:
    return f"{JOBS}/{job_id}?tenant={tenant_id}"


@router.get(f"{JOBS}/{{job_id}}")
async def job_page(
    job_id: uuid.UUID, request: Request, operator: CurrentOperator, session: DBSession
) -> Response:
    tenant_id = await _job_tenant(request, operator, session, job_id)
    return await _job_page(request, operator, session, tenant_id, job_id)


async def _job_page(
    request: Request,
    operator: Operator,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
) -> Response:
    view = await admin_jobs.get_job(session, operator.admin, tenant_id, job_id)
    shown = results.job_json(request, view.job)  # the result link, signed afresh
    return render(
        request,
        "job.html",
        status_code=status_code,
        title=f"Job {job_id}",
        view=view,
        job=view.job,
        tenant_id=tenant_id,
        result=shown["result"],
        multiplier=shown.get("multiplier"),
        errors=errors or {},
        values=values or {},
        refund_key=new_key(),
    )


@router.post(f"{JOBS}/{{job_id}}/cancel")
async def cancel_job(
    job_id: uuid.UUID, request: Request, operator: WriteOperator, session: DBSession
) -> Response:
    tenant_id = await _job_tenant(request, operator, session, job_id)
    require_write(operator, tenant_id)
    settings = request.app.state.settings
    try:
        async with session.begin_nested():  # undone alone on error
            job, released = await admin_jobs.cancel_job(
                session,
                request,
                operator.admin,
                tenant_id,
                job_id,
                webhook_lease_s=settings.jobs_webhook_lease_seconds,
            )
    except AppError as exc:
        if not form_problem(exc):
            raise
        return await _job_page(
            request,
            operator,
            session,
            tenant_id,
            job_id,
            status_code=exc.status,
            errors={"cancel": exc.message},
        )
    if released:
        await session.commit()  # the inputs go only once the cancel is durable
        await results.delete_stored(results.store_of(request), job.source_key, job.target_key)
    flash = "job-canceled" if job.status == "canceled" else "job-cancel-requested"
    return see_other(job_url(job_id, tenant_id), flash)


@router.post(f"{JOBS}/{{job_id}}/refund")
async def refund_job(
    job_id: uuid.UUID,
    request: Request,
    operator: WriteOperator,
    session: DBSession,
    idempotency_key: Annotated[str, Form(max_length=300)] = "",
    amount: Annotated[str, Form(max_length=100)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Give back what the job was charged (blank amount: all that is left), once per form
    (its Idempotency-Key): never more than charged minus refunded."""
    tenant_id = await _job_tenant(request, operator, session, job_id)
    require_write(operator, tenant_id)
    try:
        async with session.begin_nested():  # undone alone on error
            tokens = optional_int(amount, "amount", low=1, high=10**12)
            why = text_field(reason, "reason", max_length=1000, required=True)

            async def operation() -> dict[str, Any]:
                return await corrections.refund_job(
                    session,
                    request,
                    operator.admin,
                    tenant_id,
                    job_id,
                    amount=tokens,
                    reason=why,
                    request_key=idempotency_key,
                )

            _, replayed = await keyed_write(
                session,
                request,
                scope=f"tenant:{tenant_id}",
                key=idempotency_key,
                fields={"amount": tokens, "reason": why},
                operation=operation,
            )
    except AppError as exc:
        if not form_problem(exc):
            raise
        return await _job_page(
            request,
            operator,
            session,
            tenant_id,
            job_id,
            status_code=exc.status,
            errors={"refund": exc.message},
            values={"amount": amount, "reason": reason},
        )
    return see_other(
        job_url(job_id, tenant_id), "refund-replayed" if replayed else "refund-applied"
    )
