"""Idempotency-Key: the one mechanism every keyed write uses (swap, bulk recharge, price
book, user import, cancel...), with the contract's replay rules in ``KeyClaim._replay_of``.

A write claims its key (``KeyClaim.take``) in the same transaction as the write itself,
so a concurrent duplicate waits on the key's row until the first request commits and then
replays its answer: the write runs once. A failed write rolls its key back with everything
else, so the client may retry with the same key. ``run_idempotent`` wraps a JSON route in
all of this; the swap, whose answer may come long after its transaction, uses ``KeyClaim``
itself (see ``provisional``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import Database
from app.core.errors import Conflict, IdempotencyKeyReused, InvalidIdempotencyKey
from app.core.idempotency import repository

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
MIN_TTL_HOURS = 24

# What any keyed write can answer because of its key, for the route to declare
# (``responses=error_responses(*KEYED_WRITE_ERRORS, ...)``): a malformed key, a key reused
# with another request, or the same key still in use by another request (409 Conflict).
KEYED_WRITE_ERRORS = (InvalidIdempotencyKey, IdempotencyKeyReused, Conflict)

log = logging.getLogger(__name__)


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

    @classmethod
    def of_digest(cls, digest: str) -> Fingerprint:
        """A request its route fingerprints itself (a swap: by what it asks, whatever its
        encoding)."""
        return cls(digest, digest)

    def matches(self, stored: str | None) -> bool:
        # None: a bulk recharge's key from before batches were fingerprinted (migrations
        # 0006 and 0009), which any request to the same route has always replayed.
        return stored is None or stored in (self.canonical, self.raw)


def request_fingerprint(body: bytes) -> Fingerprint:
    raw = hashlib.sha256(body).hexdigest()
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        return Fingerprint(raw, raw)
    return Fingerprint(hashlib.sha256(canonical).hexdigest(), raw)


class Replay(Exception):  # noqa: N818 - a signal, not an error
    """The key was used before with this same request: answer as that request answered.

    ``status``: the status the first request answered with; None while it is still
    answering (a ``provisional`` key). ``body``: the stored answer's body. ``stored``: that
    stored answer is the first answer itself, to be sent again as it is (``response``);
    otherwise the route rebuilds the answer (a swap's 200, from its job) or, while the
    first request is still answering, answers as that request will.

    An exception, so that a write that finds its key taken can leave its transaction by
    raising it (which rolls back what it did before).
    """

    def __init__(self, status: int | None, body: Any, *, stored: bool) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.stored = stored

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        """The stored answer again, marked as a replay."""
        assert self.stored and self.status is not None
        return JSONResponse(self.body, status_code=self.status, headers=replay_headers(headers))


def replay_headers(headers: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), REPLAY_HEADER: "true"}


@dataclass(frozen=True)
class KeyClaim:
    """A request's Idempotency-Key, in the caller's ``scope``: "user:<id>" for API-key
    callers, "tenant:<id>" for admins (the contract: keys are scoped to the caller).

    Options, both off for a plain JSON write:

    - ``provisional``: the status of an answer stored before the request answers. A swap
      stores its 202 when its job is created; it may answer 200 (or the job's error) once
      the job ends, and records that with ``mark_answered``. A replay repeats the stored
      answer only once the first request answered with it; with another status, the route
      rebuilds that answer; before any, the replay answers as the first request will.
    - ``permanent``: never purged. A bulk recharge's key is honoured for good, not for
      SWAPMETER_IDEMPOTENCY_TTL_HOURS: a batch retried days later must not credit again.
    """

    scope: str
    key: str
    method_path: str
    fingerprint: Fingerprint
    provisional: int | None = None
    permanent: bool = False

    @classmethod
    def of(
        cls,
        request: Request,
        *,
        scope: str,
        fingerprint: Fingerprint,
        method_path: str | None = None,
        provisional: int | None = None,
        permanent: bool = False,
    ) -> KeyClaim | None:
        """The request's key (400 InvalidIdempotencyKey if malformed); None without one.
        ``method_path`` defaults to the request's own."""
        key = request_key(request)
        if key is None:
            return None
        if method_path is None:
            method_path = f"{request.method} {request.url.path}"
        return cls(scope, key, method_path[:512], fingerprint, provisional, permanent)

    async def take(self, session: AsyncSession) -> Replay | None:
        """Claim the key in ``session``'s transaction: None when this request now owns it
        (then ``store_answer`` in the same transaction), else the replay of the request
        that owned it (see ``find``)."""
        owned = await repository.claim(
            session,
            scope=self.scope,
            key=self.key,
            method_path=self.method_path,
            request_hash=self.fingerprint.canonical,
            permanent=self.permanent,
        )
        if owned:
            return None
        replay = await self.find(session)
        if replay is None:  # deleted by the purge between our two statements
            raise Conflict("Idempotency key expired while in use; retry the request")
        return replay

    async def find(self, session: AsyncSession) -> Replay | None:
        """The replay of an earlier request with this key, if there was one: a look before
        costly work (a swap's uploads), which ``take`` confirms in its transaction."""
        stored = await repository.get(session, scope=self.scope, key=self.key)
        return None if stored is None else self._replay_of(stored)

    def _replay_of(self, stored: repository.StoredKey) -> Replay:
        """The contract's replay rules, for every keyed write."""
        if stored.method_path != self.method_path or not self.fingerprint.matches(
            stored.request_hash
        ):
            raise IdempotencyKeyReused(f"This {HEADER} was already used with a different request")
        if stored.response_status is None:
            raise Conflict(f"A request with this {HEADER} is still in progress")
        if self.provisional is None:
            return Replay(stored.response_status, stored.response_body, stored=True)
        if stored.answered_at is None:  # the first request is still answering
            return Replay(None, stored.response_body, stored=False)
        status = stored.response_status
        return Replay(status, stored.response_body, stored=status == self.provisional)

    async def store_answer(self, session: AsyncSession, status: int, body: Any) -> None:
        """The answer a replay repeats (``body`` JSON-ready), in the claim's transaction."""
        await repository.store_response(
            session,
            scope=self.scope,
            key=self.key,
            status=status,
            body_json=orjson.dumps(body).decode(),
        )

    async def mark_answered(self, db: Database, status: int) -> None:
        """A ``provisional`` key's first request has answered ``status`` (migration 0008),
        recorded in a transaction of its own once that answer is ready.

        Never fails the answer itself: unrecorded, a replay answers as the first request
        would (a swap's waits for its job, as it asks)."""
        try:
            async with db.autocommit() as connection:
                await repository.mark_answered(
                    connection, scope=self.scope, key=self.key, status=status
                )
        except Exception:  # noqa: BLE001 - the customer's answer matters more
            log.warning("could not record the answer to %s %r", HEADER, self.key, exc_info=True)


def request_key(request: Request) -> str | None:
    """The request's Idempotency-Key, checked (400 InvalidIdempotencyKey); None without."""
    key = request.headers.get(HEADER)
    if key is not None and not (1 <= len(key) <= MAX_KEY_LENGTH and key.isprintable()):
        raise InvalidIdempotencyKey(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters")
    return key


async def run_idempotent(
    session: AsyncSession,
    request: Request,
    *,
    scope: str,
    operation: Callable[[], Awaitable[tuple[int, Any]]],
    permanent: bool = False,
) -> Response:
    """Answer a JSON write: ``operation`` runs once per key, and its (status, body) is the
    answer every replay repeats. Without a key it just runs."""
    if request_key(request) is None:
        status, body = await operation()
        return JSONResponse(jsonable_encoder(body), status_code=status)
    claim = KeyClaim.of(
        request,
        scope=scope,
        fingerprint=request_fingerprint(await request.body()),
        permanent=permanent,
    )
    assert claim is not None
    replay = await claim.take(session)
    if replay is not None:
        return replay.response()
    status, body = await operation()
    encoded = jsonable_encoder(body)
    await claim.store_answer(session, status, encoded)
    return JSONResponse(encoded, status_code=status)


async def purge_expired_keys(session: AsyncSession, *, ttl_hours: int, batch: int = 10_000) -> int:
    """Deletes stored keys older than ``ttl_hours`` (never less than 24), in batches;
    permanent keys stay.

    Returns how many were deleted; run it periodically (worker loop or cron).
    """
    hours = max(ttl_hours, MIN_TTL_HOURS)
    total = 0
    while True:
        deleted = await repository.delete_older_than(session, hours=hours, batch=batch)
        total += deleted
        if deleted < batch:
            return total
