"""The swap route: POST /swap-face. It parses, checks and holds before answering, then waits
for an image (or a video with ``Prefer: wait``). (Jobs: ``job_endpoints``; results:
``result_endpoints``.)

The API side only: nothing imported here reaches the worker or the engine's runner.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated, Any

import orjson
import pybase64
from fastapi import Header, Request, Response
from fastapi.responses import JSONResponse

from app.auth.dependencies import (
    API_KEY_AUTH_ERRORS,
    ApiPrincipal,
    CurrentApiUser,
)
from app.core import ratelimit
from app.core.deps import SettingsDep
from app.core.errors import (
    INFERENCE_STATUS,
    AccountFrozen,
    BadRequest,
    Canceled,
    DocumentedRouter,
    FaceSizeTooSmall,
    ImageDecodeFailed,
    ImagePixelExceed,
    InferenceError,
    InsufficientBalance,
    InternalError,
    InvalidBase64,
    InvalidFaceMapping,
    InvalidOutputFormat,
    MalformedJSON,
    ModelHashMismatch,
    ModelInvalid,
    ModelLicenceRefused,
    ModelNotInstalled,
    NoFaceDetected,
    NotFound,
    PayloadTooLarge,
    QueueTimeout,
    RateLimited,
    ResultExpired,
    UnsupportedMediaType,
    UrlFetchFailed,
    UrlNotAllowed,
    ValidationError,
    VideoDecodeFailed,
    VideoTooLong,
    WorkerLost,
    error_response,
    error_responses,
)
from app.core.idempotency.service import (
    KEYED_WRITE_ERRORS,
    Fingerprint,
    KeyClaim,
    Replay,
    replay_headers,
)
from app.core.settings import Settings
from app.jobs import events, inputs, intake, media, results, schemas, service
from app.jobs import repository as repo
from app.jobs.anomaly import check as anomaly
from app.jobs.models import FINAL_STATUSES
from app.jobs.repository import JobRecord
from billing.schemas import inline_schema

log = logging.getLogger(__name__)

router = DocumentedRouter(prefix="/api/v1", tags=["swap"], responses=API_KEY_AUTH_ERRORS)

# Failed jobs answer with their error code; codes of our own failures are 5xx.
_FAILURE_STATUS = {
    **INFERENCE_STATUS,
    "WorkerLost": 503,
    "QueueTimeout": 503,
    "InternalError": 500,
}

# What a swap answers before anything is held: its body (read_body, parse_swap_request:
# BadRequest is a multipart body that cannot be read), its URL inputs and webhook URL
# (app.core.fetch) and its media (media.prepare_inputs); then the hold (intake.submit).
SWAP_INPUT_ERRORS = (
    MalformedJSON,
    BadRequest,
    InvalidBase64,
    InvalidFaceMapping,
    InvalidOutputFormat,
    ValidationError,
    UrlNotAllowed,
    UrlFetchFailed,
    ImageDecodeFailed,
    VideoDecodeFailed,
    VideoTooLong,
    PayloadTooLarge,
    ImagePixelExceed,
    UnsupportedMediaType,
)
# What a swap's final answer carries when its job failed (``_final_answer``, with
# ``_FAILURE_STATUS``; an image's, or a video's waited for): the engine's codes,
# InferenceFailed (``InferenceError``) included, ours, and 409 Canceled.
_JOB_FAILURE_ERRORS = (
    ImageDecodeFailed,
    VideoDecodeFailed,
    NoFaceDetected,
    FaceSizeTooSmall,
    InvalidFaceMapping,
    VideoTooLong,
    ImagePixelExceed,
    UnsupportedMediaType,
    ModelNotInstalled,
    ModelLicenceRefused,
    ModelHashMismatch,
    ModelInvalid,
    InferenceError,
    WorkerLost,
    QueueTimeout,
    InternalError,
    Canceled,
)

SWAP_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": inline_schema(schemas.SwapFaceRequest)},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["source", "target"],
                    "properties": {
                        "source": {"type": "string", "format": "binary"},
                        "target": {"type": "string", "format": "binary"},
                        "faces": {
                            "type": "string",
                            "description": "largest, all, or a JSON list of pairs",
                        },
                        **{
                            name: {"type": "string"}
                            for name in inputs.OPTION_FIELDS
                            if name != "faces"
                        },
                    },
                }
            },
        },
    }
}


# -- helpers ---------------------------------------------------------------------------------


async def rate_limit(
    request: Request, user: ApiPrincipal, settings: Settings, kind: str = "swap"
) -> dict[str, str]:
    """429 RateLimited past the caller's rate; else the RateLimit headers to send back.

    The rate is the key's own when it has one (a bucket per key), else the user's plan's
    (one bucket per user, shared by all their keys), else the configured default (per
    key). A rate of its own keeps the configured burst-to-rate ratio (by default two
    seconds' worth of requests at once). Quotes (``kind``) count in buckets of their own,
    at the same rates.
    """
    own = user.rate_limit_per_second or user.plan_rate_limit_per_second
    rate = float(own or settings.rate_limit_per_second)
    burst = settings.rate_limit_burst
    if own:
        burst = max(1, round(settings.rate_limit_burst * rate / settings.rate_limit_per_second))
    bucket = f"{kind}:{user.api_key_id}"
    if not user.rate_limit_per_second and user.plan_rate_limit_per_second:
        bucket = f"{kind}-user:{user.user_id}"
    decision = await ratelimit.check_rate(
        request.app.state.ratelimit_redis,
        bucket,
        rate,
        burst,
        fail_open=settings.rate_limit_fail_open,
        timeout_s=settings.rate_limit_redis_timeout_seconds,
    )
    ratelimit.raise_if_limited(decision)
    return ratelimit.rate_limit_headers(decision)


def _idempotency_claim(
    request: Request, user: ApiPrincipal, spec: inputs.SwapSpec
) -> KeyClaim | None:
    """The swap's key: its 202 is stored with its job, its final answer may follow."""
    return KeyClaim.of(
        request,
        scope=f"user:{user.user_id}",
        fingerprint=Fingerprint.of_digest(spec.fingerprint()),
        method_path=intake.SUBMIT_PATH,
        provisional=202,
    )


async def _final_answer(
    request: Request, job: JobRecord, response_mode: str, headers: dict[str, str]
) -> Response:
    if job.status == "succeeded":
        result = job.result or {}
        field = "image" if job.kind == "image" else "video"
        out: dict[str, Any] = {
            "duration": result.get("duration"),
            "resolution": result.get("resolution"),
            "faces_swapped": result.get("faces_swapped"),
        }
        if response_mode == "url":
            # Signed afresh, like the job's own JSON: a replay days later gets a live link,
            # or 410 once the result is gone (as the base64 answer would), never a dead one.
            if not results.result_kept(request, job):
                raise results.expired(request, job)
            out[f"{field}_url"] = results.result_link(request, job.result_key)["url"]
        else:
            out[field] = pybase64.b64encode_as_string(await results.read_result(request, job))
        body = {
            "status": "success",
            "message": "Face swap completed",
            "job_id": str(job.id),
            "tokens_charged": job.tokens_charged,
            "result": out,
        }
        # orjson: a base64 image is a large string, which the stdlib encoder copies twice.
        return Response(orjson.dumps(body), media_type="application/json", headers=headers)
    code = job.error_code or ("Canceled" if job.status == "canceled" else "InternalError")
    status = 409 if job.status == "canceled" else _FAILURE_STATUS.get(code, 500)
    return error_response(
        request,
        status,
        code,
        job.error_message or code,
        headers=headers,
        details={"job_id": str(job.id), "tokens_charged": job.tokens_charged},
    )


async def _answer(
    request: Request,
    job_id: uuid.UUID,
    accepted: dict[str, Any],
    *,
    wait_s: float | None,
    response_mode: str,
    headers: dict[str, str],
    watching: asyncio.Future[JobRecord | None] | None = None,
) -> Response:
    """200 (or the job's error) when it is final within ``wait_s``; else 202 ``accepted``.

    The job is committed, its Tokens held: whatever cuts the wait short (the database or
    the result store failing, a worker lost meanwhile) answers 202 with the job, never an
    error that would hide a job the client may be charged for. The one error answered is
    the one that names its job: a replayed result that is gone (410 ResultExpired).
    """
    if wait_s is None:
        return JSONResponse(accepted, status_code=202, headers=headers)
    try:
        job = await events.wait_for_final(
            request.app.state.db,
            request.app.state.job_waiters,
            job_id,
            wait_s,
            watching=watching,
        )
        if job is not None and job.status in FINAL_STATUSES:
            return await _final_answer(request, job, response_mode, headers)
    except ResultExpired:
        raise
    except Exception:  # noqa: BLE001 - any failure here: the job still stands, say so
        log.warning("job %s: its wait was cut short, answering 202", job_id, exc_info=True)
        return JSONResponse(accepted, status_code=202, headers=headers)
    if job is None:
        raise NotFound("Job not found")
    return JSONResponse(accepted, status_code=202, headers=headers)


# -- swap-face -------------------------------------------------------------------------------


@router.post(
    "/swap-face",
    openapi_extra=SWAP_BODY,
    responses={
        200: {"model": schemas.SwapSucceeded, "description": "Image (or waited-for video) done"},
        202: {"model": schemas.SwapAccepted, "description": "Queued: poll urls.get"},
        # NotFound: a replayed key whose job is no longer stored; ResultExpired: a final
        # answer (a replay's, say) whose result is no longer stored.
        **error_responses(
            *SWAP_INPUT_ERRORS,
            InsufficientBalance,
            AccountFrozen,
            RateLimited,
            *KEYED_WRITE_ERRORS,
            NotFound,
            ResultExpired,
            *_JOB_FAILURE_ERRORS,
        ),
    },
)
async def swap_face(
    request: Request,
    user: CurrentApiUser,
    settings: SettingsDep,
    prefer: Annotated[str | None, Header(description="wait=N: wait up to N s for a video")] = None,
) -> Response:
    """Swap the source's face into the target image or video.

    Tokens are held before any pixel is processed (one transaction with the job), captured
    when it succeeds, released when it fails. Images answer 200 when done; videos answer
    202 with where to poll, or 200 when done within ``Prefer: wait=N``. Honours
    Idempotency-Key: the same request replayed returns the same job and is charged once.
    """
    # No request-wide transaction here: this request may wait a minute for its job, and
    # holds a pooled connection only while it reads or writes.
    headers = await rate_limit(request, user, settings)
    body = await inputs.read_body(request, settings.jobs_max_body_bytes)
    spec = await inputs.parse_swap_request(request, body, settings.jobs_max_body_bytes)
    wait_pref = inputs.prefer_wait(prefer, settings)
    if wait_pref is not None:
        headers["Preference-Applied"] = f"wait={wait_pref}"
    response_mode = spec.options["response"]
    claim = _idempotency_claim(request, user, spec)
    db = request.app.state.db

    def wait_for(kind: str) -> float | None:
        if kind == "image":
            return settings.jobs_image_wait_seconds if wait_pref is None else wait_pref
        return wait_pref

    if claim is not None:
        async with db.session() as s:
            replay = await claim.find(s)
        if replay is not None:
            return await _replay(request, replay, spec, wait_for, headers)

    prepared = await checked_media(spec, settings)
    job_id = uuid.uuid4()
    # Watched before it exists: however soon the job ends, the answer hears it without
    # reading the row back.
    with request.app.state.job_waiters.watch(job_id) as finished:
        try:
            # Before anything is held: a swap that breaks a freeze rule holds nothing.
            await anomaly.check_swap(request, user, prepared, enhance=bool(spec.options["enhance"]))
            job = await intake.submit(
                db,
                results.store_of(request),
                _submission(request, user, spec, prepared, job_id),
                claim=claim,
                metered=settings.jobs_metering,
                max_attempts=settings.jobs_max_attempts,
            )
        except Replay as replay:
            return await _replay(request, replay, spec, wait_for, headers)
        finally:
            prepared.discard()
        response = await _answer(
            request,
            job.id,
            service.accepted_json(job),
            wait_s=wait_for(job.kind),
            response_mode=response_mode,
            headers=headers,
            watching=finished,
        )
    if claim is not None:  # a replay of this key answers the same way from now on
        await claim.mark_answered(db, response.status_code)
    return response


async def checked_media(spec: inputs.SwapSpec, settings: Settings) -> media.PreparedInputs:
    """The request's webhook URL vetted, its media fetched or decoded, then checked and
    measured (``media.prepare_inputs``): all before anything is held."""
    await inputs.check_webhook_url(spec.options["webhook_url"], settings)
    source, target = await inputs.resolve_media(spec, settings)
    return await media.prepare_inputs(
        source,
        target,
        faces=spec.options["faces"],
        output_format=spec.options["output_format"],
        settings=settings,
    )


def _submission(
    request: Request,
    user: ApiPrincipal,
    spec: inputs.SwapSpec,
    prepared: media.PreparedInputs,
    job_id: uuid.UUID,
) -> intake.Submission:
    params = {
        **spec.options,
        "output_format": prepared.output_format,
        "target": prepared.describe(),
    }
    return intake.Submission(
        tenant_id=user.tenant_id,
        user_id=user.user_id,
        api_key_id=user.api_key_id,
        kind=prepared.kind,
        source=prepared.source,
        source_ext=prepared.source_ext,
        target=prepared.target_file or prepared.target or b"",
        target_ext=prepared.target_ext,
        target_seconds=prepared.seconds,
        params=params,
        webhook_url=spec.options["webhook_url"],
        request_id=getattr(request.state, "request_id", None),
        job_id=job_id,
    )


async def _replay(
    request: Request,
    replay: Replay,
    spec: inputs.SwapSpec,
    wait_for: Any,
    headers: dict[str, str],
) -> Response:
    """The first request's answer again: 202 when it answered 202, the job's final answer
    when it answered that. While the first request is still answering, the replay waits
    for the job as its own request asks (``wait_for``)."""
    if replay.stored:
        return replay.response(headers)
    headers = replay_headers(headers)
    async with request.app.state.db.session() as s:
        job = await repo.get_job(s, uuid.UUID(replay.body["job_id"]))
    if job is None:
        raise NotFound("Job not found")
    final = replay.status is not None  # the job ended before that first answer
    return await _answer(
        request,
        job.id,
        replay.body,
        wait_s=request.app.state.settings.jobs_max_wait_seconds if final else wait_for(job.kind),
        response_mode=spec.options["response"],
        headers=headers,
    )
