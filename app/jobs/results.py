"""Results and their links: where a job's output is kept (the result store), the signed,
expiring links that reach it, downloads with Range, and when a result is gone (410).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from app.errors import NotFound, RangeNotSatisfiable, ResultExpired
from app.jobs import service
from app.jobs.repository import JobRecord
from app.storage import ResultStore, content_type_for, signed_link

log = logging.getLogger(__name__)

_RANGE_SPEC = re.compile(r"(\d{0,18})-(\d{0,18})")  # longer: no file is that big


MAX_RANGES = 100  # Starlette's own limit for one request


def store_of(request: Request) -> ResultStore:
    store: ResultStore = request.app.state.result_store
    return store


def job_json(request: Request, job: JobRecord) -> dict[str, Any]:
    """The job as the contract shows it, with its result link signed afresh: a link read
    now is good for the whole TTL, however long ago the job ended. Once the result is no
    longer kept its ``url`` and ``expires_at`` are null: no link that cannot work."""
    out = service.job_json(job)
    if out["result"] is not None and job.result_key:
        link = (
            result_link(request, job.result_key)
            if result_kept(request, job)
            else {"url": None, "expires_at": None}
        )
        out["result"] = {**out["result"], **link}
    return out


def result_kept(request: Request, job: JobRecord) -> bool:
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
        store_of(request).path_for(job.result_key)  # None for a remote store: not checked
    except NotFound:
        return False
    return True


def result_link(request: Request, key: str) -> dict[str, str]:
    return signed_link(store_of(request), key, request.app.state.settings.results_url_ttl_seconds)


async def read_result(request: Request, job: JobRecord) -> bytes:
    if not job.result_key:
        raise NotFound("This job has no result")
    with gone_when_missing(request, job):
        return await store_of(request).read(job.result_key)


@contextlib.contextmanager
def gone_when_missing(request: Request, job: JobRecord) -> Iterator[None]:
    """A succeeded job whose result the store no longer has: 410 ResultExpired, which says
    why (not a 404, which would suggest the job itself is unknown)."""
    try:
        yield
    except NotFound:
        raise expired(request, job) from None


def expired(request: Request, job: JobRecord) -> ResultExpired:
    hours = request.app.state.settings.results_retention_seconds / 3600
    return ResultExpired(
        f"The result of job {job.id} is no longer stored: results are kept {hours:g} h "
        "after the job ends",
        details={"job_id": str(job.id)},
    )


async def serve(request: Request, store: ResultStore, key: str, filename: str) -> Response:
    path = store.path_for(key)  # NotFound once the cleanup removed it
    media_type = content_type_for(key)
    if path is not None:
        vet_range(request, path.stat().st_size)
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


def vet_range(request: Request, size: int) -> None:
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
        raise RangeNotSatisfiable(
            f"A requested range lies outside this {size}-byte file",
            headers={"Content-Range": f"bytes */{size}"},
        )


def _outside(spec: re.Match[str], size: int) -> bool:
    """A range no byte of the file is in: one starting at or past its end, or ``-0``."""
    if spec[1]:
        return int(spec[1]) >= size
    return int(spec[2]) == 0 or size == 0


async def delete_stored(store: ResultStore, *keys: str) -> None:
    """Best effort, all at once: what is left behind is removed by the results cleanup."""

    async def delete(key: str) -> None:
        try:
            await store.delete(key)
        except Exception:  # noqa: BLE001
            log.warning("could not delete stored object %s", key, exc_info=True)

    await asyncio.gather(*(delete(key) for key in keys))
