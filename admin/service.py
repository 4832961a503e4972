"""Admin use cases: tenants, admins, users (the import is admin.user_import), API keys,
freezes and the audit log.

Each write checks the caller's reach (``ensure_tenant_access``), does its work through the
tenancy and billing services, and appends one audit record last (the audit lock is held
until the boundary commits). Services flush; the boundary commits.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from admin import repository, schemas
from app.auth import passwords
from app.auth import repository as admins
from app.auth.dependencies import AdminPrincipal, ensure_platform_admin, ensure_tenant_access
from app.auth.repository import AdminRow
from app.core import audit
from app.core.errors import (
    Conflict,
    InvalidCursor,
    InvalidEmail,
    InvalidRole,
    NotFound,
    WeakPassword,
)
from app.tenancy import repository as tenancy_repository
from app.tenancy import service as tenancy
from app.tenancy.repository import ApiKeyRow, TenantRow, UserRow
from billing import service as billing

log = logging.getLogger(__name__)

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _check_new_credentials(email: str, password: str) -> None:
    if not _EMAIL_RE.match(email):
        raise InvalidEmail("email is not a valid address")
    problem = passwords.password_problem(password)
    if problem:
        raise WeakPassword(problem)


# -- tenants -------------------------------------------------------------------------------


async def _tenant_for(
    session: AsyncSession, admin: AdminPrincipal, tenant_id: uuid.UUID, *, write: bool
) -> TenantRow:
    ensure_tenant_access(admin, tenant_id, write=write)
    return await tenancy.get_tenant(session, tenant_id)


async def create_tenant(
    session: AsyncSession, request: Request, admin: AdminPrincipal, *, name: str, slug: str | None
) -> TenantRow:
    ensure_platform_admin(admin)
    tenant = await tenancy.create_tenant(session, name=name, slug=slug)
    await billing.open_tenant_accounts(session, tenant.id)
    await audit.record(
        session,
        request=request,
        actor=admin,
        action="tenant.create",
        tenant_id=tenant.id,
        target=f"tenant:{tenant.id}",
        details={"name": tenant.name, "slug": tenant.slug},
    )
    return tenant


async def get_tenant(
    session: AsyncSession, admin: AdminPrincipal, tenant_id: uuid.UUID
) -> TenantRow:
    return await _tenant_for(session, admin, tenant_id, write=False)


async def list_tenants(
    session: AsyncSession, admin: AdminPrincipal, *, after_slug: str | None, limit: int
) -> list[TenantRow]:
    """A page of tenants by slug, after ``after_slug`` (the last one seen: the page's
    ``next_cursor``). A cursor that no tenant slug could be is 400 InvalidCursor."""
    if not after_slug:
        after_slug = None
    elif not tenancy.valid_slug(after_slug):  # create_tenant's own test: every slug works
        raise InvalidCursor("cursor is not one this API returned")
    return await tenancy_repository.list_tenants(
        session, only=admin.tenant_id, after_slug=after_slug, limit=limit
    )


async def update_tenant(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    changes: dict[str, Any],
) -> TenantRow:
    before = await _tenant_for(session, admin, tenant_id, write=True)
    if "status" in changes:
        ensure_platform_admin(admin)
    if "approval_threshold" in changes and _loosens(
        before.approval_threshold, changes["approval_threshold"]
    ):
        # Four-eyes approval that the same tenant admin could switch off protects nothing:
        # tenant admins may add or lower the threshold, only platform admins raise or remove it.
        ensure_platform_admin(admin)
    if "name" in changes and changes["name"] is None:
        del changes["name"]
    if "status" in changes and changes["status"] is None:
        del changes["status"]
    if "webhook_url" in changes and not changes["webhook_url"]:
        changes["webhook_url"] = None
    after = await tenancy_repository.update_tenant(session, tenant_id, changes)
    assert after is not None
    diff = {
        column: {"from": getattr(before, column), "to": getattr(after, column)}
        for column in sorted(changes)
        if getattr(before, column) != getattr(after, column)
    }
    if diff:
        await audit.record(
            session,
            request=request,
            actor=admin,
            action="tenant.update",
            tenant_id=tenant_id,
            target=f"tenant:{tenant_id}",
            details={"changes": diff},
        )
    return after


def _loosens(current: int | None, new: int | None) -> bool:
    """True when ``new`` lets larger batches through without approval than ``current``."""
    if current is None:
        return False
    return new is None or new > current


# -- admins --------------------------------------------------------------------------------


async def create_admin(
    session: AsyncSession,
    request: Request,
    actor: AdminPrincipal,
    *,
    tenant_id: uuid.UUID | None,
    email: str,
    password: str,
    role: str,
) -> AdminRow:
    """A tenant's admin or auditor (tenant_id set), or a platform-wide one (platform only).

    Any other role is 400 InvalidRole, once the caller's reach is checked (a stranger to
    the tenant still gets 404)."""
    if tenant_id is None:
        ensure_platform_admin(actor)
        if role not in schemas.PLATFORM_ROLES:
            raise InvalidRole(f"role must be one of {', '.join(schemas.PLATFORM_ROLES)}")
    else:
        await _tenant_for(session, actor, tenant_id, write=True)
        if role == "platform_admin":
            raise InvalidRole("A tenant cannot have platform admins")
        if role not in schemas.TENANT_ROLES:
            raise InvalidRole(f"role must be one of {', '.join(schemas.TENANT_ROLES)}")
        if role == "tenant_admin":
            # A second tenant admin can approve the first one's batches: a tenant admin
            # who could make one would be approving their own (four-eyes, as with the
            # approval threshold). Tenant admins add auditors; platform admins add admins.
            ensure_platform_admin(actor)
    email = email.strip()
    _check_new_credentials(email, password)
    password_hash = await passwords.hash_password(password)
    admin = await admins.insert_admin(
        session, email=email, password_hash=password_hash, role=role, tenant_id=tenant_id
    )
    if admin is None:
        raise Conflict("An admin with this email already exists")
    await audit.record(
        session,
        request=request,
        actor=actor,
        action="admin.create",
        tenant_id=tenant_id,
        target=f"admin:{admin.id}",
        details={"email": admin.email, "role": admin.role},
    )
    return admin


async def list_admins(
    session: AsyncSession, actor: AdminPrincipal, tenant_id: uuid.UUID
) -> list[AdminRow]:
    await _tenant_for(session, actor, tenant_id, write=False)
    return await admins.list_admins(session, tenant_id)


async def set_admin_status(
    session: AsyncSession, request: Request, actor: AdminPrincipal, admin_id: uuid.UUID, status: str
) -> AdminRow:
    target = await admins.get_admin(session, admin_id)
    if target is None:
        raise NotFound("Admin not found")
    if target.tenant_id is None:
        if not actor.sees_every_tenant:
            raise NotFound("Admin not found")
        ensure_platform_admin(actor)
    else:
        ensure_tenant_access(actor, target.tenant_id, write=True)
        if target.role == "tenant_admin" and target.id != actor.id:
            # As with adding one (create_admin): re-enabling a tenant admin gives the
            # tenant a second approver, and disabling one removes a peer's four eyes.
            ensure_platform_admin(actor)
    if target.id == actor.id and status != "active":
        raise Conflict("You cannot disable your own account")
    updated = await admins.set_admin_status(session, admin_id, status)
    assert updated is not None
    if target.status != status:
        await audit.record(
            session,
            request=request,
            actor=actor,
            action="admin.update",
            tenant_id=target.tenant_id,
            target=f"admin:{admin_id}",
            details={"email": target.email, "status": {"from": target.status, "to": status}},
        )
    return updated


# -- users ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserView:
    external_id: str
    balance: int
    held: int
    available: int
    status: str
    created_at: datetime
    email: str | None
    display_name: str | None
    expiring: list[dict[str, Any]] = field(default_factory=list)
    plan: str | None = None


async def user_view(session: AsyncSession, user: UserRow) -> UserView:
    account = await billing.account_view(session, user.id)
    return UserView(
        external_id=user.external_id,
        balance=account.balance,
        held=account.held,
        available=account.available,
        status=account.status,
        created_at=user.created_at,
        email=user.email,
        display_name=user.display_name,
        expiring=[lot.as_dict() for lot in account.expiring],
        plan=user.plan,
    )


async def get_user(
    session: AsyncSession, admin: AdminPrincipal, tenant_id: uuid.UUID, external_id: str
) -> UserView:
    await _tenant_for(session, admin, tenant_id, write=False)
    user = await tenancy.get_user(session, tenant_id, external_id)
    return await user_view(session, user)


async def set_user_frozen(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    external_id: str,
    *,
    frozen: bool,
    reason: str,
) -> UserView:
    await _tenant_for(session, admin, tenant_id, write=True)
    user = await tenancy.get_user(session, tenant_id, external_id)
    if frozen:
        await billing.freeze_account(session, tenant_id, user.id, reason)
    else:
        await billing.unfreeze_account(session, tenant_id, user.id, reason)
    await audit.record(
        session,
        request=request,
        actor=admin,
        action="user.freeze" if frozen else "user.unfreeze",
        tenant_id=tenant_id,
        target=f"user:{external_id}",
        details={"reason": reason},
    )
    return await user_view(session, user)


# -- API keys ------------------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    external_id: str,
    *,
    name: str,
    rate_limit_per_second: int | None,
) -> tuple[ApiKeyRow, str]:
    await _tenant_for(session, admin, tenant_id, write=True)
    user = await tenancy.get_user(session, tenant_id, external_id)
    row, key = await tenancy.create_api_key(
        session,
        tenant_id=tenant_id,
        user_id=user.id,
        name=name,
        rate_limit_per_second=rate_limit_per_second,
    )
    await audit.record(
        session,
        request=request,
        actor=admin,
        action="api_key.create",
        tenant_id=tenant_id,
        target=f"api_key:{row.id}",
        details={
            "user": external_id,
            "name": name,
            "prefix": row.prefix,
            "rate_limit_per_second": rate_limit_per_second,
        },
    )
    return row, key


async def list_api_keys(
    session: AsyncSession, admin: AdminPrincipal, tenant_id: uuid.UUID, external_id: str
) -> list[ApiKeyRow]:
    await _tenant_for(session, admin, tenant_id, write=False)
    user = await tenancy.get_user(session, tenant_id, external_id)
    return await tenancy_repository.list_api_keys(session, tenant_id, user.id)


async def revoke_api_key(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
) -> None:
    await _tenant_for(session, admin, tenant_id, write=True)
    row = await tenancy.revoke_api_key(session, tenant_id, key_id)
    await audit.record(
        session,
        request=request,
        actor=admin,
        action="api_key.revoke",
        tenant_id=tenant_id,
        target=f"api_key:{key_id}",
        details={"prefix": row.prefix, "name": row.name},
    )


# -- audit log -----------------------------------------------------------------------------


async def list_audit_log(
    session: AsyncSession,
    admin: AdminPrincipal,
    *,
    tenant_id: uuid.UUID | None,
    action: str | None,
    since: datetime | None,
    before_id: int | None,
    limit: int,
    actor: str | None = None,
    until: datetime | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    if admin.tenant_id is not None:
        if tenant_id is not None and tenant_id != admin.tenant_id:
            raise NotFound("Tenant not found")
        tenant_id = admin.tenant_id
    rows = await repository.list_audit_records(
        session,
        tenant_id=tenant_id,
        action=action,
        since=since,
        until=until,
        actor=actor,
        before_id=before_id,
        limit=limit + 1,
    )
    next_cursor = str(rows[limit - 1]["id"]) if len(rows) > limit else None
    return rows[:limit], next_cursor
