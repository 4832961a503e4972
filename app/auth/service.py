"""Admin sign-in (email + password -> JWT), its throttle and audit, and the start-up bootstrap.

Kept apart from admin.service so that signing in needs nothing of the ledger.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import NoReturn

from fastapi import Request
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import passwords, repository, tokens
from app.auth.dependencies import AdminPrincipal
from app.auth.repository import AdminRow
from app.core import audit
from app.core.db import Database
from app.core.errors import InvalidCredentials, RateLimited
from app.core.settings import Settings

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: one bootstrap at a time when several processes start together.
BOOTSTRAP_LOCK = 0x626F6F74
LOGIN_FAILURE_LIMIT = 10  # tries per account (or unknown email) and address, per window
ADDRESS_FAILURE_LIMIT = 100  # tries for unknown emails per address, per window
LOGIN_FAILURE_WINDOW_SECONDS = 900

# -- sign-in -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginFailure:
    email: str
    reason: str  # unknown_email | bad_password | disabled
    admin: AdminRow | None


def _throttle_key(name: str) -> str:
    return f"swapmeter:login_failures:{hashlib.sha256(name.encode()).hexdigest()[:32]}"


# Takes one try from every counter, or none when one is used up: {1, 0}, or {0, ms to
# wait}. ARGV[1] is the window, ARGV[1 + i] the limit of KEYS[i]. Each window starts at its
# first try and is not extended by later ones.
_RESERVE_TRY = """
for i = 1, #KEYS do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n >= tonumber(ARGV[i + 1]) then return {0, redis.call('PTTL', KEYS[i])} end
end
for i = 1, #KEYS do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], ARGV[1]) end
end
return {1, 0}
"""


# A counter whose window ended meanwhile is gone: not made again (without an expiry).
_GIVE_BACK_TRY = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECR', KEYS[i]) end
end
"""


@dataclass(frozen=True)
class LoginTry:
    """One sign-in try, counted before the password is checked, so that tries sent all at
    once cannot each see a count from before the others. Per account (by admin id, so no
    spelling of its email gets a counter of its own) and address; a try for an unknown
    email also per address, whatever the email, so that one address cannot probe endless
    emails (without letting it lock the real admins who share it out). A try that signs
    in is given back."""

    keys: tuple[str, ...]
    limits: tuple[int, ...]

    @classmethod
    def of(cls, admin: AdminRow | None, email: str, ip: str) -> LoginTry:
        if admin is not None:
            return cls((_throttle_key(f"admin:{admin.id}|{ip}"),), (LOGIN_FAILURE_LIMIT,))
        return cls(
            (_throttle_key(f"email:{email.casefold()}|{ip}"), _throttle_key(f"address|{ip}")),
            (LOGIN_FAILURE_LIMIT, ADDRESS_FAILURE_LIMIT),
        )

    async def reserve(self, redis: Redis) -> None:
        """429 RateLimited when the account's or the address's tries are used up."""
        try:
            allowed, wait_ms = await redis.eval(
                _RESERVE_TRY, len(self.keys), *self.keys, LOGIN_FAILURE_WINDOW_SECONDS, *self.limits
            )
        except Exception:  # noqa: BLE001 - Redis trouble must not lock admins out
            log.warning("login throttle unavailable", exc_info=True)
            return
        if not allowed:
            raise RateLimited(
                "Too many failed sign-ins; try again later",
                headers={"Retry-After": str(max(int(wait_ms) // 1000, 1))},
            )

    async def give_back(self, redis: Redis) -> None:
        try:
            await redis.eval(_GIVE_BACK_TRY, len(self.keys), *self.keys)
        except Exception:  # noqa: BLE001
            log.warning("login throttle unavailable", exc_info=True)


async def sign_in(
    db: Database,
    redis: Redis,
    settings: Settings,
    request: Request | None,
    email: str,
    password: str,
    ip: str,
) -> tokens.IssuedToken:
    """A token for valid credentials; else 401 InvalidCredentials, the same for every
    reason, audited; 429 RateLimited past the throttle (``LoginTry``)."""
    admin = await check_credentials(db, redis, request, email, password, ip)
    return tokens.issue_admin_token(
        settings,
        admin_id=admin.id,
        role=admin.role,
        tenant_id=admin.tenant_id,
        session_epoch=admin.session_epoch,
    )


async def check_credentials(
    db: Database,
    redis: Redis,
    request: Request | None,
    email: str,
    password: str,
    ip: str,
) -> AdminRow:
    """The active admin these credentials sign in, audited as ``auth.login``; else 401
    InvalidCredentials, the same for every reason, audited; 429 RateLimited past the
    throttle (``LoginTry``). The API's tokens and the dashboard's sessions both start here.

    No database connection is held while the password is checked (argon2, tens of ms): a
    flood of bad sign-ins must not take the pool from everything else.
    """
    async with db.session() as session:
        admin = await repository.get_admin_by_email(session, email)
    login_try = LoginTry.of(admin, email, ip)
    await login_try.reserve(redis)
    if admin is None:
        # Spend the same time as a real check so response time does not reveal the email.
        await passwords.burn_verification(password)
        await _refuse(db, request, LoginFailure(email, "unknown_email", None))
    ok, new_hash = await passwords.verify_password(admin.password_hash, password)
    if not ok or admin.status != "active":
        reason = "bad_password" if not ok else "disabled"
        await _refuse(db, request, LoginFailure(email, reason, admin))
    async with db.session() as session:
        await repository.record_login(session, admin.id, new_hash)
        await audit.record(
            session,
            request=request,
            actor=AdminPrincipal(admin.id, admin.email, admin.role, admin.tenant_id),
            action="auth.login",
            tenant_id=admin.tenant_id,
            target=f"admin:{admin.id}",
            details={},
        )
    await login_try.give_back(redis)
    return admin


async def _refuse(db: Database, request: Request | None, failure: LoginFailure) -> NoReturn:
    """Audit the failure in a transaction of its own, then answer 401."""
    async with db.session() as session:
        await audit_login_failure(session, request, failure)
    raise InvalidCredentials("Invalid email or password")


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
