"""Admin sign-in (email + password -> JWT), its throttle and audit, and the start-up bootstrap.

Kept apart from admin.service so that signing in needs nothing of the ledger.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from fastapi import Request
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from admin import audit, repository
from admin.repository import AdminRow
from app.auth import passwords, tokens
from app.db import Database
from app.errors import RateLimited
from app.settings import Settings

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: one bootstrap at a time when several processes start together.
BOOTSTRAP_LOCK = 0x626F6F74
LOGIN_FAILURE_LIMIT = 10
LOGIN_FAILURE_WINDOW_SECONDS = 900

# -- sign-in -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginFailure:
    email: str
    reason: str  # unknown_email | bad_password | disabled
    admin: AdminRow | None


def _throttle_key(email: str, ip: str) -> str:
    digest = hashlib.sha256(f"{email.lower()}|{ip}".encode()).hexdigest()[:32]
    return f"swapmeter:login_failures:{digest}"


async def ensure_login_not_throttled(redis: Redis, email: str, ip: str) -> None:
    """429 after too many failed sign-ins for one email from one address."""
    key = _throttle_key(email, ip)
    try:
        failures = await redis.get(key)
        ttl = await redis.ttl(key) if failures is not None else 0
    except Exception:  # noqa: BLE001 - Redis trouble must not lock admins out
        log.warning("login throttle unavailable", exc_info=True)
        return
    if failures is not None and int(failures) >= LOGIN_FAILURE_LIMIT:
        raise RateLimited(
            "Too many failed sign-ins; try again later",
            headers={"Retry-After": str(max(int(ttl), 1))},
        )


_COUNT_FAILURE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


async def note_login_failure(redis: Redis, email: str, ip: str) -> None:
    key = _throttle_key(email, ip)
    try:
        # One script rather than EXPIRE ... NX, which Redis < 7 (the embedded one) lacks:
        # the window starts at the first failure and is not extended by later ones.
        await redis.eval(_COUNT_FAILURE, 1, key, LOGIN_FAILURE_WINDOW_SECONDS)
    except Exception:  # noqa: BLE001
        log.warning("login throttle unavailable", exc_info=True)


async def authenticate(
    session: AsyncSession, settings: Settings, email: str, password: str
) -> tokens.IssuedToken | LoginFailure:
    """A token for valid credentials, else why not (the caller answers the same 401)."""
    admin = await repository.get_admin_by_email(session, email)
    if admin is None:
        # Spend the same time as a real check so response time does not reveal the email.
        await passwords.burn_verification(password)
        return LoginFailure(email, "unknown_email", None)
    ok, new_hash = await passwords.verify_password(admin.password_hash, password)
    if not ok:
        return LoginFailure(email, "bad_password", admin)
    if admin.status != "active":
        return LoginFailure(email, "disabled", admin)
    await repository.record_login(session, admin.id, new_hash)
    return tokens.issue_admin_token(
        settings, admin_id=admin.id, role=admin.role, tenant_id=admin.tenant_id
    )


async def audit_login_failure(
    session: AsyncSession, request: Request | None, failure: LoginFailure
) -> None:
    await audit.record(
        session,
        request=request,
        actor=None,
        actor_label=f"anonymous ({failure.email[:200]})",
        action="auth.login_failed",
        tenant_id=failure.admin.tenant_id if failure.admin else None,
        target=f"admin:{failure.admin.id}" if failure.admin else None,
        details={"email": failure.email[:320], "reason": failure.reason},
    )


# -- bootstrap -----------------------------------------------------------------------------


async def bootstrap_first_admin(db: Database, settings: Settings) -> bool:
    """Creates the first platform admin from settings when no admin exists. True if created.

    Safe when several processes start together: the check and insert run under an
    advisory lock, and the email's unique index backs it up.
    """
    email, password = settings.bootstrap_admin_email.strip(), settings.bootstrap_admin_password
    if not email or not password:
        return False
    async with db.session() as session:
        if await repository.any_admin_exists(session):
            return False
    password_hash = await passwords.hash_password(password)
    async with db.session() as session:
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": BOOTSTRAP_LOCK})
        if await repository.any_admin_exists(session):
            return False
        admin = await repository.insert_admin(
            session, email=email, password_hash=password_hash, role="platform_admin", tenant_id=None
        )
        if admin is None:
            return False
        await audit.record(
            session,
            request=None,
            actor=None,
            actor_label="system:bootstrap",
            action="admin.bootstrap",
            tenant_id=None,
            target=f"admin:{admin.id}",
            details={"email": admin.email, "role": admin.role},
        )
    log.info("created the first platform admin %s", email)
    return True
