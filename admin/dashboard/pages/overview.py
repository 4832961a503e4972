"""The overview: /dashboard, a tenant's Tokens, users and jobs over a chosen period."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from admin import overview as overview_service
from admin import service as admin_service
from admin.dashboard import charts
from admin.dashboard.security import CurrentOperator, chosen_tenant
from admin.dashboard.web import PREFIX, page_router, render
from app.core.deps import DBSession, SettingsDep
from app.core.errors import NotFound

router = page_router()

PERIOD_LABELS = {"today": "Today", "7d": "7 days", "30d": "30 days"}
TENANT_CHOICES = 500  # platform operators choose among the first tenants by slug


@router.get(PREFIX)
async def overview(
    request: Request,
    operator: CurrentOperator,
    session: DBSession,
    settings: SettingsDep,
    period: str = "7d",
) -> Response:
    if period not in PERIOD_LABELS:
        raise NotFound("There is no such period")
    tenant_id = chosen_tenant(request, operator)
    tenants = []
    if operator.tenant_id is None:
        tenants = await admin_service.list_tenants(
            session, operator.admin, after_slug=None, limit=TENANT_CHOICES
        )
    context: dict = {}
    if tenant_id is not None:
        view = await overview_service.tenant_overview(
            session, settings, operator.admin, tenant_id, period
        )
        hours = charts.hour_table(view.hours, view.hours_since)
        context = {
            "view": view,
            "hours": hours,
            "tokens_chart": charts.tokens_per_day(view.days),
            "jobs_chart": charts.jobs_per_hour(hours),
            "day_series": charts.DAY_SERIES,
            "hour_statuses": charts.HOUR_STATUSES,
            "flags_counted": overview_service.FLAGS_COUNTED,
        }
    return render(
        request,
        "overview.html",
        title="Overview",
        tenants=tenants,
        tenant=context["view"].tenant if context else None,
        period=period,
        periods=PERIOD_LABELS,
        **context,
    )
