"""Idempotency-Key handling: the first response to a (scope, key) is stored and replayed.

The key row is inserted in the same transaction as the operation, so a concurrent
duplicate waits on the unique key until the first request commits and then replays its
answer: the operation runs once. A failed operation rolls back the key with everything
else, so the client may retry with the same key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, IdempotencyKeyReused, InvalidIdempotencyKey
from app.idempotency import repository

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
MIN_TTL_HOURS = 24


@dataclass(frozen=True)
class Fingerprint:
    """What makes a replay "the same request" (with the method and path, which the key row
    stores beside it). ``canonical``, the one stored: the SHA-256 of the body's JSON with
    its keys sorted and no spacing, so that a client that serialises the same request again
    (keys in another order, other spacing) replays it; a body that is not JSON (orjson's
    strict reading) is hashed as it is. ``raw``: the bytes' own hash, which keys stored
    before JSON was compared by content hold (the same bytes are always the same request).
    """

    canonical: str
    raw: str

    def matches(self, stored: str | None) -> bool:
        return stored is not None and stored in (self.canonical, self.raw)


def request_fingerprint(body: bytes) -> Fingerprint:
    raw = hashlib.sha256(body).hexdigest()
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        return Fingerprint(raw, raw)
    return Fingerprint(hashlib.sha256(canonical).hexdigest(), raw)


def _valid_key(key: str) -> bool:
    return 1 <= len(key) <= MAX_KEY_LENGTH and key.isprintable()


async def run_idempotent(
    session: AsyncSession,
    request: Request,
    *,
    scope: str,
    operation: Callable[[], Awaitable[tuple[int, Any]]],
) -> Response:
    key = request.headers.get(HEADER)
    if key is None:
        status, body = await operation()
        return JSONResponse(jsonable_encoder(body), status_code=status)
    if not _valid_key(key):
        raise InvalidIdempotencyKey(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters")

    method_path = f"{request.method} {request.url.path}"[:512]
    fingerprint = request_fingerprint(await request.body())
    owned = await repository.claim(
        session,
        scope=scope,
        key=key,
        method_path=method_path,
        request_hash=fingerprint.canonical,
    )
    if owned:
        status, body = await operation()
        encoded = jsonable_encoder(body)
        await repository.store_response(
            session, scope=scope, key=key, status=status, body_json=orjson.dumps(encoded).decode()
        )
        return JSONResponse(encoded, status_code=status)

    stored = await repository.get(session, scope=scope, key=key)
    if stored is None:  # deleted by the cleanup between our two statements
        raise Conflict("Idempotency key expired while in use; retry the request")
    if not fingerprint.matches(stored.request_hash) or stored.method_path != method_path:
        raise IdempotencyKeyReused(f"This {HEADER} was already used with a different request")
    if stored.response_status is None:
        raise Conflict("A request with this Idempotency-Key is still in progress")
    return JSONResponse(
        stored.response_body,
        status_code=stored.response_status,
        headers={REPLAY_HEADER: "true"},
    )


async def purge_expired_keys(session: AsyncSession, *, ttl_hours: int, batch: int = 10_000) -> int:
    """Deletes stored keys older than ``ttl_hours`` (never less than 24), in batches.

    Returns how many were deleted; run it periodically (worker loop or cron).
    """
    hours = max(ttl_hours, MIN_TTL_HOURS)
    total = 0
    while True:
        deleted = await repository.delete_older_than(session, hours=hours, batch=batch)
        total += deleted
        if deleted < batch:
            return total
