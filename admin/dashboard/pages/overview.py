"""The overview: /dashboard, a tenant's Tokens, users and jobs over a chosen period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import Request
from fastapi.responses import Response

from admin import reports
from admin import service as admin_service
from admin.dashboard.security import CurrentOperator, chosen_tenant
from admin.dashboard.web import PREFIX, page_router, render
from app.core.deps import DBSession
from app.core.errors import NotFound

router = page_router()

# Period -> how many UTC days it covers, today included.
PERIODS = {"today": 1, "7d": 7, "30d": 30}
PERIOD_LABELS = {"today": "Today", "7d": "7 days", "30d": "30 days"}
TENANT_CHOICES = 500  # platform operators choose among the first tenants by slug


@router.get(PREFIX)
async def overview(
    request: Request, operator: CurrentOperator, session: DBSession, period: str = "7d"
) -> Response:
    if period not in PERIODS:
        raise NotFound("There is no such period")
    tenant_id = chosen_tenant(request, operator)
    tenants = []
    if operator.tenant_id is None:
        tenants = await admin_service.list_tenants(
            session, operator.admin, after_slug=None, limit=TENANT_CHOICES
        )
    tenant = None
    totals: dict[str, int] = {}
    if tenant_id is not None:
        tenant = await admin_service.get_tenant(session, operator.admin, tenant_id)
        last = datetime.now(UTC).date()
        first = last - timedelta(days=PERIODS[period] - 1)
        days = await reports.usage_report(session, operator.admin, tenant_id, first, last)
        for column in ("recharged", "granted", "consumed", "released", "refunded", "expired"):
            totals[column] = sum(getattr(day, column) for day in days)
    return render(
        request,
        "overview.html",
        title="Overview",
        tenants=tenants,
        tenant=tenant,
        period=period,
        periods=PERIOD_LABELS,
        totals=totals,
    )
