"""Routes of the swap API: swap-face, jobs (get, list, cancel, result), signed result URLs,
and the tenant's webhook secret (admins). Routes parse, call the services, shape answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
import pybase64
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from app import ratelimit
from app.auth.dependencies import (
    ApiPrincipal,
    CurrentApiUser,
    admin_ip_allowed,
)
from app.deps import DBSession, SettingsDep
from app.errors import (
    INFERENCE_STATUS,
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    InvalidIdempotencyKey,
    NotFound,
    ResultExpired,
    error_response,
)
from app.idempotency.service import HEADER as IDEMPOTENCY_HEADER
from app.idempotency.service import MAX_KEY_LENGTH, REPLAY_HEADER, run_idempotent
from app.jobs import inputs, runner, schemas, service
from app.jobs import repository as repo
from app.jobs.models import FINAL_STATUSES
from app.jobs.repository import JobRecord
from app.settings import Settings
from app.storage import (
    RESULTS_URL_PATH,
    LocalResultStore,
    ResultStore,
    content_type_for,
    signed_link,
)
from billing.schemas import inline_schema

router = APIRouter(prefix="/api/v1", tags=["swap"])
admin_router = APIRouter(
    prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(admin_ip_allowed)]
)

# Failed jobs answer with their error code; codes of our own failures are 5xx.
_FAILURE_STATUS = {
    **INFERENCE_STATUS,
    "WorkerLost": 503,
    "QueueTimeout": 503,
    "InternalError": 500,
}
_RANGE_SPEC = re.compile(r"(\d{0,18})-(\d{0,18})")  # longer: no file is that big
MAX_RANGES = 100  # Starlette's own limit for one request
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:$|[,;\s])", re.IGNORECASE)

_SWAP_BODY = {
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


def _store(request: Request) -> ResultStore:
    store: ResultStore = request.app.state.result_store
    return store


def _job_json(request: Request, job: JobRecord) -> dict[str, Any]:
    """The job as the contract shows it, with its result link signed afresh: a link read
    now is good for the whole TTL, however long ago the job ended. Once the result is no
    longer kept its ``url`` and ``expires_at`` are null: no link that cannot work."""
    out = service.job_json(job)
    if out["result"] is not None and job.result_key:
        link = (
            _result_link(request, job.result_key)
            if _result_kept(request, job)
            else {"url": None, "expires_at": None}
        )
        out["result"] = {**out["result"], **link}
    return out


def _result_kept(request: Request, job: JobRecord) -> bool:
    """Whether the job's result is still stored: within the retention the cleanup keeps
    results for, and (local store: one stat) its file still there."""
    if not job.result_key:
        return False
    retention = request.app.state.settings.results_retention_seconds
    if (
        job.finished_at is not None
        and (datetime.now(UTC) - job.finished_at).total_seconds() > retention
    ):
        return False
    try:
        _store(request).path_for(job.result_key)  # None for a remote store: not checked
    except NotFound:
        return False
    return True


def _result_link(request: Request, key: str) -> dict[str, str]:
    return signed_link(_store(request), key, request.app.state.settings.results_url_ttl_seconds)


async def _rate_limit(request: Request, user: ApiPrincipal, settings: Settings) -> dict[str, str]:
    """429 RateLimited past the key's rate; else the RateLimit headers to send back.

    A key's own rate keeps the configured burst-to-rate ratio (by default two seconds'
    worth of requests at once).
    """
    rate = float(user.rate_limit_per_second or settings.rate_limit_per_second)
    burst = settings.rate_limit_burst
    if user.rate_limit_per_second:
        burst = max(1, round(settings.rate_limit_burst * rate / settings.rate_limit_per_second))
    decision = await ratelimit.check_rate(
        request.app.state.ratelimit_redis,
        f"swap:{user.api_key_id}",
        rate,
        burst,
        fail_open=settings.rate_limit_fail_open,
        timeout_s=settings.rate_limit_redis_timeout_seconds,
    )
    ratelimit.raise_if_limited(decision)
    return ratelimit.rate_limit_headers(decision)


def _prefer_wait(prefer: str | None, settings: Settings) -> int | None:
    """N of ``Prefer: wait=N`` (RFC 7240), capped at jobs_max_wait_seconds; None if absent."""
    if not prefer:
        return None
    match = _PREFER_WAIT.search(prefer)
    if match is None:
        return None
    return min(int(match.group(1)), settings.jobs_max_wait_seconds)


def _idempotency_claim(
    request: Request, user: ApiPrincipal, spec: inputs.SwapSpec
) -> service.IdempotencyClaim | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidIdempotencyKey(
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters"
        )
    return service.IdempotencyClaim(f"user:{user.user_id}", key, spec.fingerprint())


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
            if not _result_kept(request, job):
                raise _expired(request, job)
            out[f"{field}_url"] = _result_link(request, job.result_key)["url"]
        else:
            out[field] = pybase64.b64encode_as_string(await _read_result(request, job))
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


async def _read_result(request: Request, job: JobRecord) -> bytes:
    if not job.result_key:
        raise NotFound("This job has no result")
    with _gone_when_missing(request, job):
        return await _store(request).read(job.result_key)


@contextlib.contextmanager
def _gone_when_missing(request: Request, job: JobRecord) -> Iterator[None]:
    """A succeeded job whose result the store no longer has: 410 ResultExpired, which says
    why (not a 404, which would suggest the job itself is unknown)."""
    try:
        yield
    except NotFound:
        raise _expired(request, job) from None


def _expired(request: Request, job: JobRecord) -> ResultExpired:
    hours = request.app.state.settings.results_retention_seconds / 3600
    return ResultExpired(
        f"The result of job {job.id} is no longer stored: results are kept {hours:g} h "
        "after the job ends",
        details={"job_id": str(job.id)},
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
    """200 (or the job's error) when it is final within ``wait_s``; else 202 ``accepted``."""
    if wait_s is None:
        return JSONResponse(accepted, status_code=202, headers=headers)
    job = await service.wait_for_final(
        request.app.state.db,
        request.app.state.job_waiters,
        job_id,
        wait_s,
        watching=watching,
    )
    if job is None:
        raise NotFound("Job not found")
    if job.status in FINAL_STATUSES:
        return await _final_answer(request, job, response_mode, headers)
    return JSONResponse(accepted, status_code=202, headers=headers)


# -- swap-face -------------------------------------------------------------------------------


@router.post(
    "/swap-face",
    openapi_extra=_SWAP_BODY,
    responses={
        200: {"model": schemas.SwapSucceeded, "description": "Image (or waited-for video) done"},
        202: {"model": schemas.SwapAccepted, "description": "Queued: poll urls.get"},
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
    headers = await _rate_limit(request, user, settings)
    body = await inputs.read_body(request, settings.jobs_max_body_bytes)
    spec = await inputs.parse_swap_request(request, body, settings.jobs_max_body_bytes)
    wait_pref = _prefer_wait(prefer, settings)
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
            replay = await service.find_replay(s, claim)
        if replay is not None:
            return await _replay(request, replay, spec, wait_for, headers)

    await inputs.check_webhook_url(spec.options["webhook_url"], settings)
    source, target = await inputs.resolve_media(spec, settings)
    prepared = await runner.prepare_inputs(
        source,
        target,
        faces=spec.options["faces"],
        output_format=spec.options["output_format"],
        settings=settings,
    )
    params = {
        **spec.options,
        "output_format": prepared.output_format,
        "target": prepared.describe(),
    }
    job_id = uuid.uuid4()
    # Watched before it exists: however soon the job ends, the answer hears it without
    # reading the row back.
    with request.app.state.job_waiters.watch(job_id) as finished:
        try:
            job = await service.submit(
                db,
                _store(request),
                service.Submission(
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
                ),
                claim=claim,
                metered=settings.jobs_metering,
                max_attempts=settings.jobs_max_attempts,
            )
        except service.Replayed as replay:
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
        await service.note_answered(db, claim, response.status_code)
    return response


async def _replay(
    request: Request,
    replay: service.Replayed,
    spec: inputs.SwapSpec,
    wait_for: Any,
    headers: dict[str, str],
) -> Response:
    """The first request's answer again: 202 when it answered 202, the job's final answer
    when it answered that. While the first request is still answering, the replay waits
    for the job as its own request asks (``wait_for``)."""
    headers = {**headers, REPLAY_HEADER: "true"}
    if replay.answered == 202:
        return JSONResponse(replay.accepted, status_code=202, headers=headers)
    async with request.app.state.db.session() as s:
        job = await repo.get_job(s, replay.job_id)
    if job is None:
        raise NotFound("Job not found")
    final = replay.answered is not None  # the job ended before that first answer
    return await _answer(
        request,
        job.id,
        replay.accepted,
        wait_s=request.app.state.settings.jobs_max_wait_seconds if final else wait_for(job.kind),
        response_mode=spec.options["response"],
        headers=headers,
    )


# -- jobs ------------------------------------------------------------------------------------


def _encode_cursor(job: JobRecord) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """A cursor ``_encode_cursor`` made; anything else (a forged time, one without a time
    zone or outside what the database stores) is InvalidCursor, never a database error."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, job_id = raw.partition("|")
        created_at = datetime.fromisoformat(at)
        if created_at.tzinfo is None:
            raise ValueError("no time zone")
        return created_at.astimezone(UTC), uuid.UUID(job_id)
    except (ValueError, OverflowError, UnicodeDecodeError):
        raise BadRequest("cursor is not one this API returned", code="InvalidCursor") from None


@router.get("/jobs", response_model=schemas.JobPage)
async def list_jobs(
    request: Request,
    session: DBSession,
    user: CurrentApiUser,
    status: Literal["queued", "processing", "succeeded", "failed", "canceled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Your jobs, newest first; pass ``next_cursor`` back for the next page."""
    before = _decode_cursor(cursor) if cursor else None
    jobs = await service.list_jobs(
        session, user.user_id, status=status, before=before, limit=limit + 1
    )
    next_cursor = _encode_cursor(jobs[limit - 1]) if len(jobs) > limit else None
    return {"items": [_job_json(request, j) for j in jobs[:limit]], "next_cursor": next_cursor}


@router.get("/jobs/{job_id}", response_model=schemas.JobOut)
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
    wait_s = _prefer_wait(prefer, settings)
    headers = {"Preference-Applied": f"wait={wait_s}"} if wait_s is not None else {}
    if wait_s and job.status not in FINAL_STATUSES:
        await session.commit()
        job = (
            await service.wait_for_final(
                request.app.state.db, request.app.state.job_waiters, job_id, wait_s
            )
            or job
        )
    return JSONResponse(_job_json(request, job), headers=headers)


@router.post("/jobs/{job_id}/cancel", response_model=schemas.JobOut)
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
        job = await service.cancel_job(
            session, user.user_id, job_id, webhook_lease_s=settings.jobs_webhook_lease_seconds
        )
        if was.status == "queued" and job.status == "canceled":
            released.append(job)
        return 200, _job_json(request, job)

    response = await run_idempotent(
        session, request, scope=f"user:{user.user_id}", operation=operation
    )
    for job in released:
        await session.commit()  # the inputs go only once the cancel is durable
        await service.delete_stored(_store(request), job.source_key, job.target_key)
    return response


@router.get(
    "/jobs/{job_id}/result",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "video/mp4": {}}}},
)
async def job_result(
    job_id: uuid.UUID, request: Request, session: DBSession, user: CurrentApiUser
) -> Response:
    """The output file of one of your succeeded jobs."""
    job = await service.get_job(session, user.user_id, job_id)
    if job.status in ("queued", "processing"):
        raise Conflict("The job has not finished yet", code="ResultNotReady")
    details = {"job_id": str(job.id), "error_code": job.error_code}
    if job.status == "canceled":
        raise Conflict("The job was canceled: it has no result", code="Canceled", details=details)
    if job.status != "succeeded" or not job.result_key:
        raise Conflict(
            f"The job failed ({job.error_code or 'InternalError'}): it has no result",
            code="JobFailed",
            details=details,
        )
    ext = job.result_key.rsplit(".", 1)[-1]
    with _gone_when_missing(request, job):
        return await _serve(request, _store(request), job.result_key, f"{job.id}.{ext}")


async def _serve(request: Request, store: ResultStore, key: str, filename: str) -> Response:
    path = store.path_for(key)  # NotFound once the cleanup removed it
    media_type = content_type_for(key)
    if path is not None:
        _vet_range(request, path.stat().st_size)
        return FileResponse(
            path, media_type=media_type, filename=filename, content_disposition_type="inline"
        )
    handle = await store.open(key)

    def chunks() -> Any:
        try:
            while chunk := handle.read(1 << 20):
                yield chunk
        finally:
            handle.close()

    return StreamingResponse(iterate_in_threadpool(chunks()), media_type=media_type)


def _vet_range(request: Request, size: int) -> None:
    """Ranges of a result download, as HTTP has them (RFC 9110, 14.2): a ``Range`` header
    that is not a valid ``bytes=`` set is ignored (the whole file, 200), and one no byte of
    the file can satisfy is 416 RangeNotSatisfiable in the contract's error shape. Valid,
    satisfiable ones are served as 206 by the file response."""
    header = request.headers.get("range")
    if header is None:
        return
    unit, _, specs = header.partition("=")
    parts = specs.split(",")
    matches = [_RANGE_SPEC.fullmatch(part.strip()) for part in parts]
    valid = (
        unit.strip().lower() == "bytes"
        and len(parts) <= MAX_RANGES
        and all(
            m and (m[1] or m[2]) and not (m[1] and m[2] and int(m[1]) > int(m[2])) for m in matches
        )
    )
    if not valid:
        # Not ours to refuse: strip it, so that the file response sends the whole file.
        request.scope["headers"] = [
            (name, value) for name, value in request.scope["headers"] if name != b"range"
        ]
        return
    if any(_outside(m, size) for m in matches if m):
        raise AppError(
            f"A requested range lies outside this {size}-byte file",
            code="RangeNotSatisfiable",
            status=416,
            headers={"Content-Range": f"bytes */{size}"},
        )


def _outside(spec: re.Match[str], size: int) -> bool:
    """A range no byte of the file is in: one starting at or past its end, or ``-0``."""
    if spec[1]:
        return int(spec[1]) >= size
    return int(spec[2]) == 0 or size == 0


@router.get(RESULTS_URL_PATH.removeprefix("/api/v1") + "{key:path}", include_in_schema=True)
async def signed_result(request: Request, key: str, expires: str = "", sig: str = "") -> Response:
    """A result by its signed, expiring URL (no API key: the signature is the permission).
    Only the local results store serves these; S3 URLs point at the bucket."""
    store = _store(request)
    if not isinstance(store, LocalResultStore) or not store.verify_signed(key, expires, sig):
        raise Forbidden("This result link is invalid or has expired", code="InvalidSignature")
    try:
        return await _serve(request, store, key, key.rsplit("/", 1)[-1])
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
