"""Routes of webhooks: a job's deliveries (its owner) and the tenant's signing secret
(tenant admins). The URLs are the swap API's (``/api/v1/jobs/...``) and the admin API's.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from admin import audit
from app.auth.dependencies import (
    AdminPrincipal,
    CurrentAdmin,
    CurrentApiUser,
    admin_ip_allowed,
    ensure_tenant_access,
)
from app.deps import DBSession
from app.jobs import service as jobs
from app.tenancy import service as tenancy
from app.webhooks import repository as repo
from app.webhooks import schemas, service

router = APIRouter(prefix="/api/v1", tags=["swap"])
admin_router = APIRouter(
    prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(admin_ip_allowed)]
)


@router.get("/jobs/{job_id}/webhook-deliveries", response_model=list[schemas.WebhookDeliveryOut])
async def job_webhook_deliveries(
    job_id: uuid.UUID, session: DBSession, user: CurrentApiUser
) -> list[dict[str, Any]]:
    """Webhook deliveries of one of your jobs: status, attempts, last error."""
    await jobs.get_job(session, user.user_id, job_id)
    return [dict(r._mapping) for r in await repo.deliveries_of_job(session, job_id)]


# -- webhook secret (tenant admins) ---------------------------------------------------------


@admin_router.get("/tenants/{tenant_id}/webhook-secret", response_model=schemas.WebhookSecretOut)
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
    "/tenants/{tenant_id}/webhook-secret/rotate", response_model=schemas.WebhookSecretOut
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
