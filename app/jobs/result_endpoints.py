"""Routes of results: a job's output file (its owner) and the signed, expiring URLs that
serve it without an API key, each with HEAD.
"""

from __future__ import annotations

import uuid

from fastapi import Request, Response

from app.auth.dependencies import API_KEY_AUTH_ERRORS, CurrentApiUser
from app.core.deps import DBSession
from app.core.errors import (
    Canceled,
    DocumentedRouter,
    InvalidSignature,
    JobFailed,
    NotFound,
    RangeNotSatisfiable,
    ResultExpired,
    ResultNotReady,
    error_responses,
    merge_responses,
)
from app.core.storage import RESULTS_URL_PATH, LocalResultStore
from app.jobs import results, service

# No authentication on the router: a signed link is its own permission.
router = DocumentedRouter(prefix="/api/v1", tags=["swap"])


@router.get(
    "/jobs/{job_id}/result",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}, "image/png": {}, "video/mp4": {}}},
        **merge_responses(
            API_KEY_AUTH_ERRORS,
            error_responses(
                NotFound, ResultNotReady, Canceled, JobFailed, ResultExpired, RangeNotSatisfiable
            ),
        ),
    },
)
async def job_result(
    job_id: uuid.UUID, request: Request, session: DBSession, user: CurrentApiUser
) -> Response:
    """The output file of one of your succeeded jobs."""
    job = await service.get_job(session, user.user_id, job_id)
    if job.status in ("queued", "processing"):
        raise ResultNotReady("The job has not finished yet")
    details = {"job_id": str(job.id), "error_code": job.error_code}
    if job.status == "canceled":
        raise Canceled("The job was canceled: it has no result", details=details)
    if job.status != "succeeded" or not job.result_key:
        raise JobFailed(
            f"The job failed ({job.error_code or 'InternalError'}): it has no result",
            details=details,
        )
    ext = job.result_key.rsplit(".", 1)[-1]
    store = results.store_of(request)
    with results.gone_when_missing(request, job):
        return await results.serve(request, store, job.result_key, f"{job.id}.{ext}")


@router.get(
    RESULTS_URL_PATH.removeprefix("/api/v1") + "{key:path}",
    include_in_schema=True,
    # Never 404: a link whose signature holds names a result we made, gone if not stored.
    responses=error_responses(InvalidSignature, ResultExpired, RangeNotSatisfiable),
)
async def signed_result(request: Request, key: str, expires: str = "", sig: str = "") -> Response:
    """A result by its signed, expiring URL (no API key: the signature is the permission).
    Only the local results store serves these; S3 URLs point at the bucket."""
    store = results.store_of(request)
    signed = store.key_of_signed(key, expires, sig) if isinstance(store, LocalResultStore) else None
    if signed is None:
        raise InvalidSignature("This result link is invalid or has expired")
    key = signed
    try:
        return await results.serve(request, store, key, key.rsplit("/", 1)[-1])
    except NotFound:
        # A live signature names a result we made: gone, not unknown.
        raise ResultExpired(
            "This result is no longer stored: results are kept "
            f"{request.app.state.settings.results_retention_seconds / 3600:g} h after the "
            "job ends"
        ) from None


# HEAD on both result routes (link checkers, players probing the size): the GET's headers,
# no body. Outside the OpenAPI document, where a second operation would repeat the GET's id.
for _path, _endpoint in (
    ("/jobs/{job_id}/result", job_result),
    (RESULTS_URL_PATH.removeprefix("/api/v1") + "{key:path}", signed_result),
):
    router.add_api_route(_path, _endpoint, methods=["HEAD"], include_in_schema=False)
