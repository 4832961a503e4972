"""Routes of a user's jobs: list, get (with ``Prefer: wait``), cancel, webhook deliveries.
The API side only: nothing imported here reaches the worker or the engine's runner."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import Header, Query, Request, Response
from fastapi.responses import JSONResponse

from app.auth.dependencies import API_KEY_AUTH_ERRORS, CurrentApiUser
from app.core.deps import DBSession, SettingsDep
from app.core.errors import (
    DocumentedRouter,
    InvalidCursor,
    JobFinished,
    NotFound,
    error_responses,
)
from app.core.idempotency.service import KEYED_WRITE_ERRORS, run_idempotent
from app.jobs import events, inputs, results, schemas, service, settle
from app.jobs.models import FINAL_STATUSES
from app.jobs.repository import JobRecord
from app.webhooks import repository as webhooks
from app.webhooks import schemas as webhook_schemas

router = DocumentedRouter(prefix="/api/v1", tags=["swap"], responses=API_KEY_AUTH_ERRORS)


# The schema's pattern and the server's test of a cursor are one (``service``).
JOB_CURSOR_PATTERN = service.JOB_CURSOR_PATTERN
_encode_cursor = service.encode_cursor
_decode_cursor = service.decode_cursor


@router.get("/jobs", response_model=schemas.JobPage, responses=error_responses(InvalidCursor))
async def list_jobs(
    request: Request,
    session: DBSession,
    user: CurrentApiUser,
    status: Literal["queued", "processing", "succeeded", "failed", "canceled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None,
        Query(
            description="next_cursor of the previous page",
            json_schema_extra={"pattern": JOB_CURSOR_PATTERN},
        ),
    ] = None,
) -> dict[str, Any]:
    """Your jobs, newest first; pass ``next_cursor`` back for the next page."""
    before = _decode_cursor(cursor) if cursor else None
    jobs = await service.list_jobs(
        session, user.user_id, status=status, before=before, limit=limit + 1
    )
    next_cursor = _encode_cursor(jobs[limit - 1]) if len(jobs) > limit else None
    items = [results.job_json(request, j) for j in jobs[:limit]]
    return {"items": items, "next_cursor": next_cursor}


@router.get("/jobs/{job_id}", response_model=schemas.JobOut, responses=error_responses(NotFound))
async def get_job(
    job_id: uuid.UUID,
    request: Request,
    session: DBSession,
    user: CurrentApiUser,
    settings: SettingsDep,
    prefer: Annotated[str | None, Header(description="wait=N: wait up to N s to finish")] = None,
) -> Response:
    """One of your jobs (another user's is 404). With ``Prefer: wait=N`` the answer waits
    up to N seconds for the job to finish."""
    job = await service.get_job(session, user.user_id, job_id)
    wait_s = inputs.prefer_wait(prefer, settings)
    headers = {"Preference-Applied": f"wait={wait_s}"} if wait_s is not None else {}
    if wait_s and job.status not in FINAL_STATUSES:
        await session.commit()
        job = (
            await events.wait_for_final(
                request.app.state.db, request.app.state.job_waiters, job_id, wait_s
            )
            or job
        )
    return JSONResponse(results.job_json(request, job), headers=headers)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=schemas.JobOut,
    # Conflict, besides the key's: the job kept changing state while being canceled.
    responses=error_responses(NotFound, JobFinished, *KEYED_WRITE_ERRORS),
)
async def cancel_job(
    job_id: uuid.UUID,
    request: Request,
    session: DBSession,
    user: CurrentApiUser,
    settings: SettingsDep,
) -> Response:
    """Queued: canceled at once, every held Token back. Processing: stopped at the next
    batch of frames, and only the video seconds processed until then are charged (an
    image swap, under a second, is not interrupted). Already canceled: returned
    unchanged. Succeeded or failed: 409 JobFinished, nothing changes. Honours
    Idempotency-Key: a replay answers the first answer again."""
    released: list[JobRecord] = []

    async def operation() -> tuple[int, Any]:
        was = await service.get_job(session, user.user_id, job_id)
        job = await settle.cancel_job(
            session, user.user_id, job_id, webhook_lease_s=settings.jobs_webhook_lease_seconds
        )
        if was.status == "queued" and job.status == "canceled":
            released.append(job)
        return 200, results.job_json(request, job)

    response = await run_idempotent(
        session, request, scope=f"user:{user.user_id}", operation=operation
    )
    for job in released:
        await session.commit()  # the inputs go only once the cancel is durable
        await results.delete_stored(results.store_of(request), job.source_key, job.target_key)
    return response


@router.get(
    "/jobs/{job_id}/webhook-deliveries",
    response_model=list[webhook_schemas.WebhookDeliveryOut],
    responses=error_responses(NotFound),
)
async def job_webhook_deliveries(
    job_id: uuid.UUID, session: DBSession, user: CurrentApiUser
) -> list[dict[str, Any]]:
    """Webhook deliveries of one of your jobs: status, attempts, last error."""
    await service.get_job(session, user.user_id, job_id)
    return [dict(r._mapping) for r in await webhooks.deliveries_of_job(session, job_id)]
