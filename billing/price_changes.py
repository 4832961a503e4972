"""An admin's change of a tenant's prices: a new price book version and its audit record,
as ``PUT /admin/tenants/{id}/pricing`` and the dashboard's price editor write it."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.dependencies import AdminPrincipal, ensure_tenant_access
from app.core import audit
from app.tenancy import service as tenancy
from billing import pricing
from billing.pricing import PriceBook


async def check_access(session: AsyncSession, admin: AdminPrincipal, tenant_id: uuid.UUID) -> None:
    """Before a price change (and before a replay is answered): 403 for auditors, 404 for
    another tenant or none."""
    ensure_tenant_access(admin, tenant_id, write=True)
    await tenancy.get_tenant(session, tenant_id)


async def change_prices(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    changes: dict[str, Any],
    *,
    reason: str | None,
) -> tuple[PriceBook, PriceBook]:
    """Write the tenant's next version with ``changes`` (checked prices, and ``peak`` when
    given: fields left out keep their value) and audit it as ``price.update``; the book
    replaced and the new one. Changes equal to the current prices write nothing, and
    audit nothing: both books returned are the current one (same version)."""
    await check_access(session, admin, tenant_id)
    before, book = await pricing.set_prices(
        session,
        tenant_id,
        changes,
        created_by=admin.id,
        created_by_email=admin.email,
        reason=reason,
    )
    if book.version == before.version:  # nothing changed, nothing written
        return before, book
    await audit.record(
        session,
        request=request,
        actor=admin,
        action="price.update",
        tenant_id=tenant_id,
        target=f"price_book:{book.version}",
        details={
            "version": book.version,
            "previous_version": before.version,
            "prices": {name: getattr(book, name) for name in pricing.PRICE_FIELDS},
            "previous": {name: getattr(before, name) for name in pricing.PRICE_FIELDS},
            "peak": book.peak.as_dict() if book.peak else None,
            "previous_peak": before.peak.as_dict() if before.peak else None,
            "reason": reason,
        },
    )
    return before, book
