"""Reading a swap-face request: the body (size-limited), JSON or multipart, and its media.

Everything here happens before a Token is held, and every bad input ends in a contract
code: PayloadTooLarge (413), MalformedJSON / InvalidBase64 / InvalidFaceMapping (400),
ValidationError (422), UrlNotAllowed / UrlFetchFailed (400), UnsupportedMediaType (415)
for a body that is neither JSON nor multipart.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from app.core.errors import (
    BadRequest,
    InvalidBase64,
    InvalidFaceMapping,
    MalformedJSON,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from app.core.fetch import fetch_url, vet_url
from app.core.settings import Settings
from app.jobs.schemas import MAX_FACE_INDEX, MAX_FACE_PAIRS, MediaRef, SwapFaceRequest

OPTION_FIELDS = (
    "faces",
    "output_format",
    "keep_fps",
    "keep_audio",
    "enhance",
    "watermark",
    "response",
    "webhook_url",
)


@dataclass(frozen=True)
class MediaInput:
    """One input as the client gave it: bytes (base64 or a file part) or a URL to fetch."""

    data: bytes | None = None
    url: str | None = None

    def fingerprint(self) -> str:
        if self.url is not None:
            return "url:" + self.url
        return "sha256:" + hashlib.sha256(self.data or b"").hexdigest()


@dataclass(frozen=True)
class SwapSpec:
    source: MediaInput
    target: MediaInput
    options: dict[str, Any]  # the validated OPTION_FIELDS, JSON-ready

    def fingerprint(self) -> str:
        """Same inputs and options, same fingerprint, whatever the encoding (JSON or
        multipart, any boundary): an Idempotency-Key replay is recognised by what it asks."""
        canonical = orjson.dumps(
            {
                "source": self.source.fingerprint(),
                "target": self.target.fingerprint(),
                "options": self.options,
            },
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(canonical).hexdigest()


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes ``max_bytes``."""
    too_large = PayloadTooLarge(f"The request body is larger than {max_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # so request.form() parses what we already read
    return body


async def parse_swap_request(request: Request, body: bytes, max_bytes: int) -> SwapSpec:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        raw = await _multipart_fields(request, max_bytes)
    elif content_type in ("application/json", "") or content_type.endswith("+json"):
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedJSON(f"The body is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise MalformedJSON("The body must be a JSON object")
    else:
        raise UnsupportedMediaType("Send application/json or multipart/form-data")
    return _validate(raw)


async def _multipart_fields(request: Request, max_bytes: int) -> dict[str, Any]:
    try:
        form = await request.form(max_files=2, max_fields=32, max_part_size=max_bytes)
    except MultiPartException as exc:
        raise BadRequest(f"The multipart body could not be read: {exc.message}") from None
    raw: dict[str, Any] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            raw[name] = MediaInput(data=await value.read())
            continue
        if name in ("source", "target"):
            text = value.strip()
            if text.startswith(("http://", "https://")):
                raw[name] = {"url": text}
                continue
            try:
                raw[name] = MediaInput(data=decode_base64(text, name))
            except BadRequest:
                # Most often a file sent without a filename (curl -F "source=<face.jpg"),
                # which multipart makes a text field.
                raise InvalidBase64(
                    f"{name} came as a text field and is not base64: send the file as a "
                    f'file part with a filename (curl -F "{name}=@face.jpg"), or send '
                    "its base64 or URL"
                ) from None
        elif name == "faces" and value.strip().startswith("["):
            try:
                raw[name] = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise InvalidFaceMapping(
                    "faces must be largest, all or a JSON list of pairs"
                ) from None
        elif value != "" or name == "webhook_url":
            raw[name] = value or None
    return raw


def _validate(raw: dict[str, Any]) -> SwapSpec:
    files = {k: raw.pop(k) for k in ("source", "target") if isinstance(raw.get(k), MediaInput)}
    faces = raw.get("faces")
    if isinstance(faces, list) and len(faces) > MAX_FACE_PAIRS:
        raise InvalidFaceMapping(
            f"at most {MAX_FACE_PAIRS} face pairs are allowed, got {len(faces)}"
        )
    placeholder = {k: "" for k in files}  # file parts are bytes already: validate the rest
    try:
        parsed = SwapFaceRequest.model_validate({**raw, **placeholder})
    except ValidationError as exc:
        if any(e.get("loc", ())[:1] == ("faces",) for e in exc.errors()):
            # One clear answer, not pydantic's first guess at which shape was meant.
            raise InvalidFaceMapping(
                'faces must be "largest", "all" or a list of up to '
                f'{MAX_FACE_PAIRS} {{"target_face": i, "source_face": j}} pairs, face '
                f"indices being whole numbers from 0 to {MAX_FACE_INDEX}"
            ) from None
        raise RequestValidationError(
            [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
        ) from None
    options = parsed.model_dump(include=set(OPTION_FIELDS), mode="json")
    if parsed.output_format == "jpeg":
        options["output_format"] = "jpg"
    return SwapSpec(
        source=files.get("source") or _media(parsed.source, "source"),
        target=files.get("target") or _media(parsed.target, "target"),
        options=options,
    )


def _media(value: str | MediaRef, field: str) -> MediaInput:
    if isinstance(value, MediaRef):
        if value.url is not None:
            return MediaInput(url=value.url)
        value = value.base64 or ""
    return MediaInput(data=decode_base64(value, field))


def decode_base64(text: str, field: str) -> bytes:
    """Standard or URL-safe base64, with or without padding, line breaks or a data: prefix."""
    try:
        # What nearly every client sends (plain, padded, one line) in one pass over the
        # text; anything else is normalised below first. Megabytes of it are common.
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    if text.startswith("data:"):
        text = text.partition(",")[2]
    compact = "".join(text.split())
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        return pybase64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidBase64(f"{field} is not valid base64") from None


async def resolve_media(spec: SwapSpec, settings: Settings) -> tuple[bytes, bytes]:
    """The source and target bytes, fetching URL inputs (both at once) with the size and
    time limits and the private-address refusal of app.core.fetch."""

    async def one(media: MediaInput) -> bytes:
        if media.url is None:
            return media.data or b""
        return await fetch_url(
            media.url,
            max_bytes=settings.url_fetch_max_bytes,
            timeout_s=settings.url_fetch_timeout_seconds,
            allow_hosts=settings.url_fetch_allow_hosts_set,
        )

    tasks = [asyncio.create_task(one(spec.source)), asyncio.create_task(one(spec.target))]
    try:
        source, target = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:  # the first refusal answers; the other fetch stops
            task.cancel()
        raise
    return source, target


async def check_webhook_url(url: str | None, settings: Settings) -> None:
    """Refuse a webhook URL we would never call (scheme, credentials, private address)
    now, rather than after the job ran."""
    if url:
        await vet_url(url, settings.url_fetch_allow_hosts_set)


PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:$|[,;\s])", re.IGNORECASE)


def prefer_wait(prefer: str | None, settings: Settings) -> int | None:
    """N of ``Prefer: wait=N`` (RFC 7240), capped at jobs_max_wait_seconds; None if absent."""
    if not prefer:
        return None
    match = PREFER_WAIT.search(prefer)
    if match is None:
        return None
    return min(int(match.group(1)), settings.jobs_max_wait_seconds)
