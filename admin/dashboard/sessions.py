"""Dashboard sign-in sessions: kept by the server in Redis, named by an opaque cookie.

The cookie holds only a random id (256 bits); Redis holds, under the id's SHA-256 (a
copy of Redis gives no usable cookie), the admin and the admin's ``session_epoch`` at
sign-in, for ``SWAPMETER_DASHBOARD_SESSION_SECONDS``. Signing out deletes the entry, so
the old cookie is refused at once; disabling the admin raises the epoch (migration 0007),
which ends its sessions as it ends its API tokens.

CSRF: every state-changing form carries ``csrf_token``, an HMAC of the session id under a
key derived from the service secret; before sign-in, of a random pre-session cookie (the
sign-in form itself is protected). Checked on every POST (``check_csrf``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response

from app.core.settings import Settings

SESSION_COOKIE = "swapmeter_dashboard"
LOGIN_COOKIE = "swapmeter_dashboard_login"  # the pre-session id of the sign-in form
COOKIE_PATH = "/dashboard"
LOGIN_COOKIE_SECONDS = 3600
_KEY_PREFIX = "swapmeter:dashboard:session:"
# The ids this service hands out: 43 URL-safe characters; anything else is not looked up.
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class StoredSession:
    id: str  # the cookie's value
    admin_id: uuid.UUID
    session_epoch: int
    expires_at: float  # UNIX time


def _key(session_id: str) -> str:
    return _KEY_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def well_formed(value: str | None) -> bool:
    return bool(value) and len(value or "") == 43 and set(value or "") <= _ID_CHARS


async def start(
    redis: Redis, settings: Settings, admin_id: uuid.UUID, session_epoch: int
) -> StoredSession:
    session_id = secrets.token_urlsafe(32)
    ttl = settings.dashboard_session_seconds
    stored = StoredSession(session_id, admin_id, session_epoch, time.time() + ttl)
    record = {"admin": str(admin_id), "epoch": session_epoch, "expires": stored.expires_at}
    await redis.set(_key(session_id), orjson.dumps(record), ex=ttl)
    return stored


async def find(redis: Redis, session_id: str | None) -> StoredSession | None:
    """The live session of this cookie value, or None (unknown, ended or expired)."""
    if not well_formed(session_id):
        return None
    raw = await redis.get(_key(session_id or ""))
    if raw is None:
        return None
    record = orjson.loads(raw)
    if record["expires"] <= time.time():
        return None
    return StoredSession(
        session_id or "", uuid.UUID(record["admin"]), int(record["epoch"]), record["expires"]
    )


async def end(redis: Redis, session_id: str) -> None:
    await redis.delete(_key(session_id))


# -- CSRF ----------------------------------------------------------------------------------


def _csrf_key(settings: Settings) -> bytes:
    return hashlib.sha256(b"swapmeter-dashboard-csrf|" + settings.jwt_secret.encode()).digest()


def csrf_token(settings: Settings, session_id: str) -> str:
    return hmac.new(_csrf_key(settings), session_id.encode(), hashlib.sha256).hexdigest()


def csrf_ok(settings: Settings, request: Request, given: str | None) -> bool:
    """Whether ``given`` is the token of this browser's session cookie, or of its sign-in
    form's cookie (both HttpOnly and same-site: no other site can read or send them)."""
    if not given:
        return False
    return any(
        hmac.compare_digest(csrf_token(settings, subject), given)
        for subject in (request.cookies.get(SESSION_COOKIE), request.cookies.get(LOGIN_COOKIE))
        if well_formed(subject)
    )


def csrf_subject(request: Request) -> str | None:
    """What the forms' CSRF tokens are made of: the session id once signed in, the
    sign-in form's pre-session id before."""
    for name in (SESSION_COOKIE, LOGIN_COOKIE):
        value = request.cookies.get(name)
        if well_formed(value):
            return value
    return None


# -- cookies -------------------------------------------------------------------------------


def cookie_is_secure(request: Request, settings: Settings) -> bool:
    """Secure in production, and whenever the page came over HTTPS."""
    return settings.environment == "production" or request.url.scheme == "https"


def set_cookie(
    response: Response, request: Request, settings: Settings, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=cookie_is_secure(request, settings),
    )


def clear_cookie(response: Response, request: Request, settings: Settings, name: str) -> None:
    response.delete_cookie(
        name,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=cookie_is_secure(request, settings),
    )
