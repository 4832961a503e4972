"""FastAPI dependencies that say who is calling: admins (JWT) and end users (API keys).

Tenant isolation lives here too: an admin bound to one tenant gets 404 for anything of
another tenant (never 403, which would confirm that it exists).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository as admin_repository
from app.auth.tokens import decode_admin_token
from app.core import logs
from app.core.deps import DBSession, SettingsDep
from app.core.errors import (
    Forbidden,
    InvalidApiKey,
    InvalidToken,
    NotFound,
    ServiceUnavailable,
    TokenExpired,
    Unauthorized,
    error_responses,
)
from app.core.ip_allowlist import enforce_admin_ip_allowlist
from app.tenancy import service as tenancy_service

ROLES = ("platform_admin", "tenant_admin", "auditor")

# auto_error=False: we raise our own errors in the contract's shape. These objects also
# document the two security schemes in OpenAPI.
_bearer = HTTPBearer(auto_error=False, description="Admin JWT, or an end user's API key")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


@dataclass(frozen=True)
class AdminPrincipal:
    id: uuid.UUID
    email: str
    role: str  # platform_admin | tenant_admin | auditor
    tenant_id: uuid.UUID | None

    @property
    def is_platform_admin(self) -> bool:
        return self.role == "platform_admin"

    @property
    def sees_every_tenant(self) -> bool:
        return self.tenant_id is None


@dataclass(frozen=True)
class ApiPrincipal:
    user_id: int
    tenant_id: uuid.UUID
    external_id: str
    api_key_id: uuid.UUID
    rate_limit_per_second: int | None
    # The user's plan's rate, read with the key (no round trip of its own).
    plan_rate_limit_per_second: int | None = None


def ensure_tenant_access(admin: AdminPrincipal, tenant_id: uuid.UUID, *, write: bool) -> None:
    """NotFound when the tenant is outside the admin's reach; Forbidden when an auditor writes."""
    if admin.tenant_id is not None and admin.tenant_id != tenant_id:
        raise NotFound("Tenant not found")
    if write and admin.role == "auditor":
        raise Forbidden("Auditors have read-only access")


def ensure_platform_admin(admin: AdminPrincipal) -> None:
    if not admin.is_platform_admin:
        raise Forbidden("Only platform admins may do this")


async def admin_ip_allowed(request: Request, settings: SettingsDep) -> None:
    """Router-level guard for /api/v1/admin and /api/v1/auth (403 Forbidden)."""
    enforce_admin_ip_allowlist(request, settings)


async def current_admin(
    request: Request,
    session: DBSession,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AdminPrincipal:
    enforce_admin_ip_allowlist(request, settings)
    if credentials is None or not credentials.credentials:
        raise Unauthorized("Missing bearer token")
    claims = decode_admin_token(settings, credentials.credentials)
    return await admin_of_session(session, claims.admin_id, claims.session_epoch)


async def admin_of_session(
    session: AsyncSession, admin_id: uuid.UUID, session_epoch: int
) -> AdminPrincipal:
    """The admin a token or a dashboard session of this epoch stands for, read afresh.

    The database, not the token, is the authority on role, tenant and whether the admin
    may still sign in: a disabled admin's unexpired tokens stop working at once
    (InvalidToken, 401)."""
    row = await admin_repository.get_admin(session, admin_id)
    if row is None or row.status != "active":
        raise InvalidToken("This admin account is not active")
    if session_epoch != row.session_epoch:
        raise InvalidToken("This session ended when the account was disabled; sign in again")
    if row.tenant_id is not None:
        logs.tenant_id.set(str(row.tenant_id))
    return AdminPrincipal(id=row.id, email=row.email, role=row.role, tenant_id=row.tenant_id)


async def current_api_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_api_key_header)],
) -> ApiPrincipal:
    raw = credentials.credentials if credentials is not None else header_key
    if not raw:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer sm_...' or X-API-Key")
    # One statement in its own transaction: the key is read afresh on every request (a
    # revocation counts at once) without a BEGIN/COMMIT round trip each time.
    async with request.app.state.db.autocommit() as conn:
        found = await tenancy_service.authenticate_api_key(conn, raw)
    await tenancy_service.note_api_key_used(request.app.state.db, found.id)
    logs.tenant_id.set(str(found.tenant_id))
    return ApiPrincipal(
        user_id=found.user_id,
        tenant_id=found.tenant_id,
        external_id=found.external_id,
        api_key_id=found.id,
        rate_limit_per_second=found.rate_limit_per_second,
        plan_rate_limit_per_second=found.plan_rate_limit_per_second,
    )


CurrentAdmin = Annotated[AdminPrincipal, Depends(current_admin)]
CurrentApiUser = Annotated[ApiPrincipal, Depends(current_api_user)]

# What these dependencies answer, declared once on each router that uses them
# (``DocumentedRouter(responses=...)``): the address allowlist and the role checks are
# 403 Forbidden, as is an API key of a suspended tenant; every check reads the database.
ADMIN_AUTH_ERRORS = error_responses(
    Unauthorized, InvalidToken, TokenExpired, Forbidden, ServiceUnavailable
)
API_KEY_AUTH_ERRORS = error_responses(Unauthorized, InvalidApiKey, Forbidden, ServiceUnavailable)
