"""Routes of webhooks: the tenant's signing secret (tenant admins). A job's deliveries are
read through the jobs API (``app/jobs/endpoints.py``)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.dependencies import (
    ADMIN_AUTH_ERRORS,
    AdminPrincipal,
    CurrentAdmin,
    admin_ip_allowed,
    ensure_tenant_access,
)
from app.core import audit
from app.core.deps import DBSession
from app.core.errors import DocumentedRouter, NotFound, error_responses
from app.tenancy import service as tenancy
from app.webhooks import schemas, service

admin_router = DocumentedRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(admin_ip_allowed)],
    responses=ADMIN_AUTH_ERRORS,
)


# -- webhook secret (tenant admins) ---------------------------------------------------------


# NotFound: no such tenant, or one outside the admin's reach; an auditor's 403 Forbidden
# is among the authentication's.
@admin_router.get(
    "/tenants/{tenant_id}/webhook-secret",
    response_model=schemas.WebhookSecretOut,
    responses=error_responses(NotFound),
)
async def get_webhook_secret(
    tenant_id: uuid.UUID, request: Request, session: DBSession, admin: CurrentAdmin
) -> dict[str, Any]:
    """The key that signs this tenant's webhooks (X-SwapMeter-Signature), made on first
    read. Auditors may not read it: it lets its holder forge webhooks. Every read is
    audited as ``webhook_secret.read`` (the secret itself is not logged)."""
    ensure_tenant_access(admin, tenant_id, write=True)
    await tenancy.get_tenant(session, tenant_id)
    row = await service.webhook_secret(session, tenant_id)
    return await _audited_secret(request, session, admin, tenant_id, "webhook_secret.read", row)


@admin_router.post(
    "/tenants/{tenant_id}/webhook-secret/rotate",
    response_model=schemas.WebhookSecretOut,
    responses=error_responses(NotFound),
)
async def rotate_webhook_secret(
    tenant_id: uuid.UUID, request: Request, session: DBSession, admin: CurrentAdmin
) -> dict[str, Any]:
    """Replace the signing key; deliveries from now on are signed with the new one.
    Audited as ``webhook_secret.rotate`` (the secret itself is not logged)."""
    ensure_tenant_access(admin, tenant_id, write=True)
    await tenancy.get_tenant(session, tenant_id)
    row = await service.rotate_webhook_secret(session, tenant_id)
    return await _audited_secret(request, session, admin, tenant_id, "webhook_secret.rotate", row)


async def _audited_secret(
    request: Request,
    session: AsyncSession,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    action: str,
    row: Any,
) -> dict[str, Any]:
    """The secret as answered, once its reading or rotation is in the audit log (without
    the secret itself)."""
    await audit.record(
        session,
        request=request,
        actor=admin,
        action=action,
        tenant_id=tenant_id,
        target=f"tenant:{tenant_id}",
        details={},
    )
    return {"tenant_id": tenant_id, **dict(row._mapping)}
