"""Routes of the price books: the caller's prices (end users) and a tenant's prices (admins).

Routes only parse, call billing.pricing and shape the response.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from app.auth.dependencies import (
    ADMIN_AUTH_ERRORS,
    API_KEY_AUTH_ERRORS,
    CurrentAdmin,
    CurrentApiUser,
    admin_ip_allowed,
    ensure_tenant_access,
)
from app.core.deps import DBSession
from app.core.errors import (
    DocumentedRouter,
    InvalidAmount,
    InvalidText,
    NotFound,
    error_responses,
)
from app.core.fields import Text
from app.core.idempotency.service import KEYED_WRITE_ERRORS, run_idempotent
from app.tenancy import service as tenancy
from billing import price_changes, pricing

router = DocumentedRouter(prefix="/api/v1", tags=["billing"], responses=API_KEY_AUTH_ERRORS)
admin_router = DocumentedRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(admin_ip_allowed)],
    responses=ADMIN_AUTH_ERRORS,
)


class PeakOut(BaseModel):
    queue_depth_at_least: int = Field(
        description="From this many jobs queued (cluster-wide), the multiplier applies"
    )
    multiplier: float = Field(
        description="Swaps hold ceil(price × multiplier) Tokens: above 1, at most 10, "
        "two decimal places at most"
    )


class PriceBookOut(BaseModel):
    version: int = Field(description="1, 2, 3... per change; 0 is the platform default")
    currency: str = "token"
    image: int = Field(description="Tokens per swapped image")
    video_second: int = Field(description="Tokens per started second of target video")
    enhance_surcharge: int = Field(description="Added per image when enhance is on")
    enhance_video_second_surcharge: int = Field(
        description="Added per started video second when enhance is on"
    )
    peak: PeakOut | None = Field(None, description="Load pricing; null: none")
    effective_from: Any = Field(None, description="When this version was set; null: default")


def _price(low: int) -> Any:
    # Typed Any so that a price that is not a JSON integer in range reaches
    # pricing.check_changes (400 InvalidAmount, like a bulk recharge's amount) instead of
    # being coerced ("3" -> 3) or answered 422; the schema still documents an integer.
    return Field(
        None, json_schema_extra={"type": "integer", "minimum": low, "maximum": pricing.MAX_PRICE}
    )


class PriceBookUpdate(BaseModel):
    """Fields left out keep their current value. A body that changes no price writes no
    version. Unknown fields are refused (422 ValidationError): a misspelt price must not
    pass for an empty change."""

    model_config = ConfigDict(extra="forbid")

    image: Any = _price(1)
    video_second: Any = _price(1)
    enhance_surcharge: Any = _price(0)
    enhance_video_second_surcharge: Any = _price(0)
    # Typed Any for the same reason as the prices: pricing.check_peak answers what is wrong
    # (422 ValidationError) rather than pydantic coercing "2" into a multiplier.
    peak: Any = Field(
        None,
        description="Load pricing: null removes it; left out, the current one stays",
        json_schema_extra={
            "anyOf": [
                {
                    "type": "object",
                    "required": ["queue_depth_at_least", "multiplier"],
                    "additionalProperties": False,
                    "properties": {
                        "queue_depth_at_least": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": pricing.MAX_PEAK_DEPTH,
                        },
                        "multiplier": {
                            "type": "number",
                            "exclusiveMinimum": 1,
                            "maximum": float(pricing.MAX_MULTIPLIER),
                            "multipleOf": 0.01,
                        },
                    },
                },
                {"type": "null"},
            ]
        },
    )
    reason: Text | None = Field(None, max_length=1000)


class TenantPricingOut(BaseModel):
    tenant_id: uuid.UUID
    current: PriceBookOut
    history: list[PriceBookOut] = Field(description="Earlier versions too, newest first")


@router.get("/pricing", response_model=PriceBookOut)
async def pricing_endpoint(session: DBSession, user: CurrentApiUser) -> dict[str, Any]:
    """Your price book, in Tokens, with its version (jobs and holds record the version
    they were priced with)."""
    return (await pricing.current_book(session, user.tenant_id)).as_dict()


@admin_router.get(
    "/tenants/{tenant_id}/pricing",
    response_model=TenantPricingOut,
    responses=error_responses(NotFound),
)
async def tenant_pricing_endpoint(
    tenant_id: uuid.UUID, session: DBSession, admin: CurrentAdmin
) -> dict[str, Any]:
    """A tenant's current prices and every earlier version."""
    ensure_tenant_access(admin, tenant_id, write=False)
    await tenancy.get_tenant(session, tenant_id)
    return {
        "tenant_id": tenant_id,
        "current": (await pricing.current_book(session, tenant_id)).as_dict(),
        "history": [b.as_dict() for b in await pricing.history(session, tenant_id)],
    }


@admin_router.put(
    "/tenants/{tenant_id}/pricing",
    response_model=PriceBookOut,
    # InvalidText: a NUL in the reason; Conflict: the Idempotency-Key still in use.
    # (A peak out of range or of the wrong shape is 422 ValidationError, which every JSON
    # route declares.)
    responses=error_responses(
        NotFound,
        InvalidAmount,
        InvalidText,
        *KEYED_WRITE_ERRORS,
    ),
)
async def set_tenant_pricing_endpoint(
    tenant_id: uuid.UUID,
    body: PriceBookUpdate,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> Response:
    """Set a tenant's prices: a new version, effective for jobs submitted from now on
    (running jobs keep the price they were held at). Audited as ``price.update``.

    ``peak: {queue_depth_at_least, multiplier}`` adds load pricing: while at least that
    many jobs are queued, swaps hold ``ceil(price × multiplier)`` Tokens (``null``
    removes it; left out, the current peak stays).

    Prices are JSON integers (400 InvalidAmount otherwise). A body that changes nothing
    (``{}``, or every price sent equal to the current one) answers 200 with the current
    book: no new version, no audit record, as a PUT repeated should."""
    await price_changes.check_access(session, admin, tenant_id)
    changes: dict[str, Any] = pricing.check_changes(
        {
            name: getattr(body, name)
            for name in pricing.PRICE_FIELDS
            if name in body.model_fields_set
        }
    )
    if "peak" in body.model_fields_set:
        changes["peak"] = pricing.check_peak(body.peak)

    async def operation() -> tuple[int, dict[str, Any]]:
        _, book = await price_changes.change_prices(
            session, request, admin, tenant_id, changes, reason=body.reason
        )
        return 200, book.as_dict()

    return await run_idempotent(session, request, scope=f"tenant:{tenant_id}", operation=operation)
