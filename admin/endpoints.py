"""Routes of the admin API (/api/v1/admin).

Routes only parse, call admin.service and shape the response.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query, Request, Response

from admin import schemas, service, user_import
from app.auth.dependencies import (
    ADMIN_AUTH_ERRORS,
    CurrentAdmin,
    admin_ip_allowed,
    ensure_tenant_access,
)
from app.core.deps import DBSession, IdCursor, SettingsDep
from app.core.errors import (
    Conflict,
    DocumentedRouter,
    InvalidAmount,
    InvalidCursor,
    InvalidEmail,
    InvalidRole,
    InvalidSlug,
    InvalidText,
    InvalidTime,
    NotFound,
    TooManyEntries,
    UserNotFound,
    WeakPassword,
    error_responses,
)
from app.core.fields import ClientTime, Text
from app.core.idempotency.service import KEYED_WRITE_ERRORS, run_idempotent
from app.tenancy.service import SLUG_PATTERN

router = DocumentedRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(admin_ip_allowed)],
    responses=ADMIN_AUTH_ERRORS,
)

# A tenant's slug (what next_cursor holds), or empty for the first page.
TENANT_CURSOR_PATTERN = "^(?:" + SLUG_PATTERN.strip("^$") + ")?$"

# A new admin's credentials and role (admin.service.create_admin); a NUL in the email
# reaches the database (InvalidText).
_NEW_ADMIN_ERRORS = (InvalidRole, InvalidEmail, WeakPassword, InvalidText, Conflict)


def _tenant_out(row) -> schemas.TenantOut:  # type: ignore[no-untyped-def]
    return schemas.TenantOut.model_validate(row, from_attributes=True)


def _admin_out(row) -> schemas.AdminOut:  # type: ignore[no-untyped-def]
    return schemas.AdminOut.model_validate(row, from_attributes=True)


def _key_out(row) -> schemas.ApiKeyOut:  # type: ignore[no-untyped-def]
    return schemas.ApiKeyOut.model_validate(row, from_attributes=True)


# -- tenants -------------------------------------------------------------------------------


@router.post(
    "/tenants",
    status_code=201,
    response_model=schemas.TenantOut,
    responses=error_responses(InvalidSlug, InvalidText, Conflict),
)
async def create_tenant(
    body: schemas.TenantCreate, request: Request, session: DBSession, admin: CurrentAdmin
) -> schemas.TenantOut:
    """Create a tenant (platform admins), with its issuance and revenue accounts."""
    tenant = await service.create_tenant(session, request, admin, name=body.name, slug=body.slug)
    return _tenant_out(tenant)


@router.get("/tenants", response_model=schemas.TenantPage, responses=error_responses(InvalidCursor))
async def list_tenants(
    session: DBSession,
    admin: CurrentAdmin,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[
        str | None,
        Query(
            description="next_cursor of the previous page (a tenant slug)",
            json_schema_extra={"pattern": TENANT_CURSOR_PATTERN},
        ),
    ] = None,
) -> schemas.TenantPage:
    """Tenants the caller can see, by slug."""
    rows = await service.list_tenants(session, admin, after_slug=cursor, limit=limit + 1)
    next_cursor = rows[limit - 1].slug if len(rows) > limit else None
    return schemas.TenantPage(items=[_tenant_out(r) for r in rows[:limit]], next_cursor=next_cursor)


@router.get(
    "/tenants/{tenant_id}",
    response_model=schemas.TenantOut,
    responses=error_responses(NotFound),
)
async def get_tenant(
    tenant_id: uuid.UUID, session: DBSession, admin: CurrentAdmin
) -> schemas.TenantOut:
    return _tenant_out(await service.get_tenant(session, admin, tenant_id))


@router.patch(
    "/tenants/{tenant_id}",
    response_model=schemas.TenantOut,
    responses=error_responses(NotFound, InvalidText, InvalidAmount),
)
async def update_tenant(
    tenant_id: uuid.UUID,
    body: schemas.TenantUpdate,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> schemas.TenantOut:
    """Change a tenant's name, approval threshold (null: off), webhook URL (null: none) or
    status (platform admins)."""
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    tenant = await service.update_tenant(session, request, admin, tenant_id, changes)
    return _tenant_out(tenant)


# -- admins --------------------------------------------------------------------------------


@router.post(
    "/tenants/{tenant_id}/admins",
    status_code=201,
    response_model=schemas.AdminOut,
    responses=error_responses(NotFound, *_NEW_ADMIN_ERRORS),
)
async def create_tenant_admin(
    tenant_id: uuid.UUID,
    body: schemas.TenantAdminCreate,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> schemas.AdminOut:
    """Create a tenant admin or auditor of this tenant."""
    row = await service.create_admin(
        session,
        request,
        admin,
        tenant_id=tenant_id,
        email=body.email,
        password=body.password,
        role=body.role,
    )
    return _admin_out(row)


@router.get(
    "/tenants/{tenant_id}/admins",
    response_model=list[schemas.AdminOut],
    responses=error_responses(NotFound),
)
async def list_tenant_admins(
    tenant_id: uuid.UUID, session: DBSession, admin: CurrentAdmin
) -> list[schemas.AdminOut]:
    return [_admin_out(r) for r in await service.list_admins(session, admin, tenant_id)]


@router.post(
    "/admins",
    status_code=201,
    response_model=schemas.AdminOut,
    responses=error_responses(*_NEW_ADMIN_ERRORS),
)
async def create_platform_admin(
    body: schemas.PlatformAdminCreate, request: Request, session: DBSession, admin: CurrentAdmin
) -> schemas.AdminOut:
    """Create a platform admin or a platform-wide auditor (platform admins only)."""
    row = await service.create_admin(
        session,
        request,
        admin,
        tenant_id=None,
        email=body.email,
        password=body.password,
        role=body.role,
    )
    return _admin_out(row)


@router.patch(
    "/admins/{admin_id}",
    response_model=schemas.AdminOut,
    responses=error_responses(NotFound, Conflict),
)
async def update_admin(
    admin_id: uuid.UUID,
    body: schemas.AdminUpdate,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> schemas.AdminOut:
    """Disable or re-enable an admin; a disabled admin's tokens stop working at once."""
    return _admin_out(
        await service.set_admin_status(session, request, admin, admin_id, body.status)
    )


# -- users ---------------------------------------------------------------------------------


@router.post(
    "/tenants/{tenant_id}/users/import",
    response_model=schemas.UserImportResponse,
    responses=error_responses(NotFound, TooManyEntries, *KEYED_WRITE_ERRORS),
)
async def import_users(
    tenant_id: uuid.UUID,
    body: schemas.UserImportRequest,
    request: Request,
    session: DBSession,
    settings: SettingsDep,
    admin: CurrentAdmin,
) -> Response:
    """Create up to 10,000 end users in one call; existing ones are counted, not changed,
    except that a row's ``plan`` puts its user, new or existing, on that plan. A bad row
    (wrong type, bad external id, email or name, a plan the tenant has not, duplicate) is
    reported in ``failed`` with its index; the other rows are imported."""
    ensure_tenant_access(admin, tenant_id, write=True)  # before a replay is answered

    async def operation() -> tuple[int, schemas.UserImportResponse]:
        result = await user_import.import_users(
            session, request, admin, settings, tenant_id, body.users
        )
        return 200, schemas.UserImportResponse(
            created=result.created,
            existing=result.existing,
            failed=[schemas.ImportFailureOut(**vars(f)) for f in result.failed],
        )

    return await run_idempotent(session, request, scope=f"tenant:{tenant_id}", operation=operation)


@router.get(
    "/tenants/{tenant_id}/users/{external_id}",
    response_model=schemas.UserOut,
    responses=error_responses(NotFound, UserNotFound, InvalidText),
)
async def get_user(
    tenant_id: uuid.UUID, external_id: str, session: DBSession, admin: CurrentAdmin
) -> schemas.UserOut:
    view = await service.get_user(session, admin, tenant_id, external_id)
    return schemas.UserOut(**vars(view))


@router.post(
    "/tenants/{tenant_id}/users/{external_id}/freeze",
    response_model=schemas.UserOut,
    responses=error_responses(NotFound, UserNotFound, InvalidText),
)
async def freeze_user(
    tenant_id: uuid.UUID,
    external_id: str,
    body: schemas.FreezeRequest,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> schemas.UserOut:
    """Freeze the user's account: no holds, debits or recharges until unfrozen."""
    view = await service.set_user_frozen(
        session, request, admin, tenant_id, external_id, frozen=True, reason=body.reason
    )
    return schemas.UserOut(**vars(view))


@router.post(
    "/tenants/{tenant_id}/users/{external_id}/unfreeze",
    response_model=schemas.UserOut,
    responses=error_responses(NotFound, UserNotFound, InvalidText),
)
async def unfreeze_user(
    tenant_id: uuid.UUID,
    external_id: str,
    body: schemas.FreezeRequest,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> schemas.UserOut:
    view = await service.set_user_frozen(
        session, request, admin, tenant_id, external_id, frozen=False, reason=body.reason
    )
    return schemas.UserOut(**vars(view))


# -- API keys ------------------------------------------------------------------------------


@router.post(
    "/tenants/{tenant_id}/users/{external_id}/api-keys",
    status_code=201,
    response_model=schemas.ApiKeyCreated,
    # Conflict: no unused key prefix found in five tries (not seen in practice).
    responses=error_responses(NotFound, UserNotFound, InvalidText, Conflict),
)
async def create_api_key(
    tenant_id: uuid.UUID,
    external_id: str,
    body: schemas.ApiKeyCreate,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> schemas.ApiKeyCreated:
    """Create an API key for the user; the full key is in this response only."""
    row, key = await service.create_api_key(
        session,
        request,
        admin,
        tenant_id,
        external_id,
        name=body.name,
        rate_limit_per_second=body.rate_limit_per_second,
    )
    return schemas.ApiKeyCreated(
        id=row.id,
        key=key,
        prefix=row.prefix,
        name=row.name,
        rate_limit_per_second=row.rate_limit_per_second,
        created_at=row.created_at,
    )


@router.get(
    "/tenants/{tenant_id}/users/{external_id}/api-keys",
    response_model=list[schemas.ApiKeyOut],
    responses=error_responses(NotFound, UserNotFound, InvalidText),
)
async def list_api_keys(
    tenant_id: uuid.UUID, external_id: str, session: DBSession, admin: CurrentAdmin
) -> list[schemas.ApiKeyOut]:
    rows = await service.list_api_keys(session, admin, tenant_id, external_id)
    return [_key_out(r) for r in rows]


@router.delete(
    "/tenants/{tenant_id}/api-keys/{key_id}",
    status_code=204,
    responses=error_responses(NotFound),
)
async def revoke_api_key(
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> Response:
    """Revoke a key: the next request made with it gets 401."""
    await service.revoke_api_key(session, request, admin, tenant_id, key_id)
    return Response(status_code=204)


# -- audit log -----------------------------------------------------------------------------


@router.get(
    "/audit-log",
    response_model=schemas.AuditPage,
    responses=error_responses(NotFound, InvalidCursor, InvalidText, InvalidTime),
)
async def audit_log(
    session: DBSession,
    admin: CurrentAdmin,
    tenant_id: uuid.UUID | None = None,
    action: Annotated[Text | None, Query(max_length=64, description="exact, or 'prefix.*'")] = None,
    since: ClientTime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: IdCursor = None,
) -> schemas.AuditPage:
    """Audit records, newest first; tenant admins and auditors see only their tenant's."""
    rows, next_cursor = await service.list_audit_log(
        session,
        admin,
        tenant_id=tenant_id,
        action=action,
        since=since,
        before_id=cursor,
        limit=limit,
    )
    return schemas.AuditPage(items=[schemas.AuditItem(**r) for r in rows], next_cursor=next_cursor)
