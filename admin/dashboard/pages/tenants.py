"""Tenants: /dashboard/tenants (list, create, suspend or reinstate) and a tenant's page
(its price book with history and editor, approval threshold, plans, anomaly rules,
admins).

Platform admins see and create every tenant; tenant admins and auditors see their own.
Writes call the Admin API's services (``admin.service``, ``billing.price_changes``).
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from admin import plans as admin_plans
from admin import service as admin_service
from admin.dashboard.forms import optional_int, text_field
from admin.dashboard.security import (
    CurrentOperator,
    Operator,
    WriteOperator,
    require_read,
    require_write,
)
from admin.dashboard.web import FLASHES, PREFIX, page_router, render, see_other
from app.core.deps import DBSession
from app.core.errors import AppError, Forbidden, NotFound, ValidationError
from app.jobs.anomaly import service as anomaly
from app.tenancy.plan_schedule import ZONES as ALL_ZONES
from billing import price_changes, pricing

router = page_router()
PAGE = 50  # tenants per page
MAX_THRESHOLD = 10**12  # admin.schemas.TenantUpdate's bound
TENANTS = f"{PREFIX}/tenants"

FLASHES.update(
    {
        "tenant-created": "Tenant created.",
        "tenant-suspended": "Tenant suspended: its users' requests are refused until reinstated.",
        "tenant-reinstated": "Tenant reinstated.",
        "threshold-saved": "Approval threshold saved.",
        "prices-saved": "New price book version saved.",
        "prices-unchanged": "Those are the current prices: no new version written.",
        "admin-created": "Admin created.",
        "admin-disabled": "Admin disabled: their sessions have ended.",
        "admin-enabled": "Admin enabled.",
    }
)


def form_problem(exc: AppError) -> bool:
    """An error to show beside the form (re-rendered), rather than as an error page."""
    return exc.status < 500 and not isinstance(exc, NotFound)


def tenant_url(tenant_id: uuid.UUID) -> str:
    return f"{TENANTS}/{tenant_id}"


# -- the list --------------------------------------------------------------------------------


@router.get(TENANTS)
async def tenants_page(
    request: Request, operator: CurrentOperator, session: DBSession, cursor: str | None = None
) -> Response:
    return await _list_page(request, operator, session, cursor=cursor)


async def _list_page(
    request: Request,
    operator: Operator,
    session: AsyncSession,
    *,
    cursor: str | None = None,
    status_code: int = 200,
    error: str | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    rows = await admin_service.list_tenants(
        session, operator.admin, after_slug=cursor, limit=PAGE + 1
    )
    next_cursor = rows[PAGE - 1].slug if len(rows) > PAGE else None
    return render(
        request,
        "tenants.html",
        status_code=status_code,
        title="Tenants",
        tenants=rows[:PAGE],
        next_cursor=next_cursor,
        error=error,
        values=values or {},
    )


@router.post(TENANTS)
async def create_tenant(
    request: Request,
    operator: WriteOperator,
    session: DBSession,
    name: Annotated[str, Form(max_length=1000)] = "",
    slug: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    try:
        async with session.begin_nested():  # undone alone on error
            tenant = await admin_service.create_tenant(
                session,
                request,
                operator.admin,
                name=text_field(name, "name", max_length=200, required=True),
                slug=slug.strip() or None,
            )
    except AppError as exc:
        if not form_problem(exc):
            raise
        return await _list_page(
            request,
            operator,
            session,
            status_code=exc.status,
            error=exc.message,
            values={"name": name, "slug": slug},
        )
    return see_other(tenant_url(tenant.id), "tenant-created")


@router.post(f"{TENANTS}/{{tenant_id}}/status")
async def set_tenant_status(
    tenant_id: uuid.UUID,
    request: Request,
    operator: WriteOperator,
    session: DBSession,
    status: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """Suspend or reinstate (platform admins: the service refuses anyone else)."""
    require_write(operator, tenant_id)
    if status not in ("active", "suspended"):
        raise NotFound("There is no such status")
    if not operator.is_platform_admin:
        raise Forbidden("Only platform admins suspend or reinstate a tenant")
    await admin_service.update_tenant(
        session, request, operator.admin, tenant_id, {"status": status}
    )
    flash = "tenant-suspended" if status == "suspended" else "tenant-reinstated"
    return see_other(tenant_url(tenant_id), flash)


# -- one tenant --------------------------------------------------------------------------------


@router.get(f"{TENANTS}/{{tenant_id}}")
async def tenant_page(
    tenant_id: uuid.UUID, request: Request, operator: CurrentOperator, session: DBSession
) -> Response:
    return await _tenant_page(request, operator, session, tenant_id)


async def _tenant_page(
    request: Request,
    operator: Operator,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
) -> Response:
    require_read(operator, tenant_id)
    tenant = await admin_service.get_tenant(session, operator.admin, tenant_id)
    book = await pricing.current_book(session, tenant_id)
    plans = await admin_plans.list_plans(session, operator.admin, tenant_id)
    values = dict(values or {})
    chosen = request.query_params.get("plan")
    if "plans" not in values and chosen:  # "Edit": the editor filled with that plan
        values["plans"] = next((p.as_dict() for p in plans if p.name == chosen), {})
    return render(
        request,
        "tenant.html",
        status_code=status_code,
        title=f"Tenant: {tenant.name}",
        tenant=tenant,
        book=book,
        history=await pricing.history(session, tenant_id),
        price_fields=PRICE_LABELS,
        admins=await admin_service.list_admins(session, operator.admin, tenant_id),
        roles=_roles_for(operator),
        plans=plans,
        zones=ZONES,
        rules=await anomaly.get_rules(request.app.state.db, operator.admin, tenant_id),
        rule_fields=RULE_FIELDS,
        rule_actions=RULE_ACTIONS,
        errors=errors or {},
        values=values,
    )


ZONES = sorted(ALL_ZONES)

# The anomaly rules' editor (``pages/rules.py`` writes it): its fields, and the actions.
RULE_FIELDS = {
    "max_requests_per_minute": "Swaps per user per minute",
    "max_same_source_per_hour": "Swaps with the same source face per user per hour",
    "max_tokens_per_day": "Tokens per user per UTC day",
}
RULE_ACTIONS = {
    "freeze": "Freeze user, refuse swap",
    "flag": "Let it through, flag it",
}

PRICE_LABELS = {
    "image": "Image (Tokens)",
    "video_second": "Video, per started second",
    "enhance_surcharge": "Enhance surcharge, per image",
    "enhance_video_second_surcharge": "Enhance surcharge, per video second",
}


def _roles_for(operator: Operator) -> tuple[str, ...]:
    """The roles this operator may give a tenant's new admin (admin.service.create_admin:
    tenant admins add auditors, platform admins add both)."""
    return ("tenant_admin", "auditor") if operator.is_platform_admin else ("auditor",)


async def form_failed(
    request: Request,
    operator: Operator,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    exc: AppError,
    form: str,
    values: dict[str, Any],
) -> Response:
    if not form_problem(exc):
        raise exc
    return await _tenant_page(
        request,
        operator,
        session,
        tenant_id,
        status_code=exc.status,
        errors={form: exc.message},
        values={form: values},
    )


@router.post(f"{TENANTS}/{{tenant_id}}/threshold")
async def set_threshold(
    tenant_id: uuid.UUID,
    request: Request,
    operator: WriteOperator,
    session: DBSession,
    approval_threshold: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Blank turns approval off. Tenant admins may add or lower it; only platform admins
    raise or remove it (the service's rule)."""
    require_write(operator, tenant_id)
    try:
        async with session.begin_nested():  # undone alone on error
            threshold = optional_int(
                approval_threshold, "approval_threshold", low=1, high=MAX_THRESHOLD
            )
            await admin_service.update_tenant(
                session, request, operator.admin, tenant_id, {"approval_threshold": threshold}
            )
    except AppError as exc:
        values = {"approval_threshold": approval_threshold}
        return await form_failed(request, operator, session, tenant_id, exc, "threshold", values)
    return see_other(tenant_url(tenant_id), "threshold-saved")


@router.post(f"{TENANTS}/{{tenant_id}}/prices")
async def set_prices(
    tenant_id: uuid.UUID,
    request: Request,
    operator: WriteOperator,
    session: DBSession,
    image: Annotated[str, Form(max_length=100)] = "",
    video_second: Annotated[str, Form(max_length=100)] = "",
    enhance_surcharge: Annotated[str, Form(max_length=100)] = "",
    enhance_video_second_surcharge: Annotated[str, Form(max_length=100)] = "",
    peak_queue_depth_at_least: Annotated[str, Form(max_length=100)] = "",
    peak_multiplier: Annotated[str, Form(max_length=100)] = "",
    reason: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """A new version of the price book (a price left blank keeps its price; the peak is
    as the form shows it: both fields blank, no peak); the same prices and peak again
    write nothing, so a double submit writes one version."""
    require_write(operator, tenant_id)
    sent = {
        "image": image,
        "video_second": video_second,
        "enhance_surcharge": enhance_surcharge,
        "enhance_video_second_surcharge": enhance_video_second_surcharge,
    }
    try:
        async with session.begin_nested():  # undone alone on error
            changes = {}
            for name, value in sent.items():
                number = optional_int(value, name, low=-(2**62), high=2**62)
                if number is not None:
                    changes[name] = number
            peak = _peak(peak_queue_depth_at_least, peak_multiplier)
            before, book = await price_changes.change_prices(
                session,
                request,
                operator.admin,
                tenant_id,
                {**pricing.check_changes(changes), "peak": peak},
                reason=text_field(reason, "reason", max_length=1000) or None,
            )
    except AppError as exc:
        values = {
            **sent,
            "peak_queue_depth_at_least": peak_queue_depth_at_least,
            "peak_multiplier": peak_multiplier,
            "reason": reason,
        }
        return await form_failed(request, operator, session, tenant_id, exc, "prices", values)
    flash = "prices-unchanged" if book.version == before.version else "prices-saved"
    return see_other(tenant_url(tenant_id) + "#prices", flash)


_MULTIPLIER = re.compile(r"\d{1,3}(\.\d{1,6})?")


def _peak(depth: str, multiplier: str) -> pricing.Peak | None:
    """The form's peak, checked as the API checks one (``pricing.check_peak``): both
    fields blank is no peak; one of them blank, 422 ValidationError."""
    depth, multiplier = depth.strip(), multiplier.strip()
    if not depth and not multiplier:
        return None
    if not depth or not multiplier:
        raise ValidationError("peak: give both the queue depth and the multiplier, or neither")
    if _MULTIPLIER.fullmatch(multiplier) is None:
        raise ValidationError("peak.multiplier must be a number such as 1.5")
    number = optional_int(depth, "peak.queue_depth_at_least", low=-(2**62), high=2**62)
    return pricing.check_peak({"queue_depth_at_least": number, "multiplier": float(multiplier)})


# -- admins of the tenant ------------------------------------------------------------------


@router.post(f"{TENANTS}/{{tenant_id}}/admins")
async def create_admin(
    tenant_id: uuid.UUID,
    request: Request,
    operator: WriteOperator,
    session: DBSession,
    email: Annotated[str, Form(max_length=1000)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    role: Annotated[str, Form(max_length=64)] = "auditor",
) -> Response:
    require_write(operator, tenant_id)
    try:
        async with session.begin_nested():  # undone alone on error
            await admin_service.create_admin(
                session,
                request,
                operator.admin,
                tenant_id=tenant_id,
                email=text_field(email, "email", max_length=320, required=True),
                password=password,
                role=role,
            )
    except AppError as exc:
        values = {"email": email, "role": role}
        return await form_failed(request, operator, session, tenant_id, exc, "admins", values)
    return see_other(tenant_url(tenant_id) + "#admins", "admin-created")


@router.post(f"{TENANTS}/{{tenant_id}}/admins/{{admin_id}}/status")
async def set_admin_status(
    tenant_id: uuid.UUID,
    admin_id: uuid.UUID,
    request: Request,
    operator: WriteOperator,
    session: DBSession,
    status: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    require_write(operator, tenant_id)
    if status not in ("active", "disabled"):
        raise NotFound("There is no such status")
    admins = await admin_service.list_admins(session, operator.admin, tenant_id)
    if admin_id not in {a.id for a in admins}:
        raise NotFound("Admin not found")
    try:
        async with session.begin_nested():  # undone alone on error
            await admin_service.set_admin_status(session, request, operator.admin, admin_id, status)
    except AppError as exc:
        return await form_failed(request, operator, session, tenant_id, exc, "admins", {})
    flash = "admin-disabled" if status == "disabled" else "admin-enabled"
    return see_other(tenant_url(tenant_id) + "#admins", flash)
