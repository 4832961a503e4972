"""Routes of the reports (/api/v1/admin/tenants/{tenant_id}/...): the user list, daily
usage (JSON or CSV) and the streamed ledger export. Every admin role may read them."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Literal

from fastapi import Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from admin import reports, schemas
from admin.report_repository import USER_SORTS
from app.auth.dependencies import ADMIN_AUTH_ERRORS, CurrentAdmin, admin_ip_allowed
from app.core.deps import DBSession
from app.core.errors import (
    DocumentedRouter,
    InvalidCursor,
    InvalidDateRange,
    InvalidText,
    NotFound,
    error_responses,
)
from app.core.fields import Text
from app.tenancy.plans import PLAN_NAME_PATTERN

router = DocumentedRouter(
    prefix="/api/v1/admin",
    tags=["reports"],
    dependencies=[Depends(admin_ip_allowed)],
    responses=ADMIN_AUTH_ERRORS,
)

UserSort = Literal[tuple(USER_SORTS)]  # type: ignore[valid-type]
From = Annotated[date, Query(alias="from", description="first UTC day, YYYY-MM-DD")]
To = Annotated[date, Query(alias="to", description="last UTC day (included), YYYY-MM-DD")]


@router.get(
    "/tenants/{tenant_id}/users",
    response_model=schemas.UserPage,
    responses=error_responses(NotFound, InvalidCursor, InvalidText),
)
async def list_users(
    tenant_id: uuid.UUID,
    session: DBSession,
    admin: CurrentAdmin,
    q: Annotated[Text | None, Query(max_length=255, description="external id prefix")] = None,
    status: Literal["active", "frozen"] | None = None,
    plan: Annotated[
        str | None,
        Query(max_length=64, pattern=PLAN_NAME_PATTERN, description="only the users on this plan"),
    ] = None,
    sort: UserSort = "external_id",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> schemas.UserPage:
    """The tenant's users with their balances and plans, a page at a time; ``q`` keeps
    those whose external id starts with it, ``plan`` those on that plan. ``sort``:
    ``external_id`` (byte order, the default), ``created_at`` or ``balance``, ``-`` first
    for largest first."""
    page = await reports.list_users(
        session,
        admin,
        tenant_id,
        prefix=q,
        status=status,
        sort=sort,
        cursor=cursor,
        limit=limit,
        plan=plan,
    )
    return schemas.UserPage(
        items=[
            schemas.UserSummaryOut(
                external_id=r.external_id,
                balance=r.balance,
                held=r.held,
                available=r.balance - r.held,
                status=r.status,
                created_at=r.created_at,
                email=r.email,
                display_name=r.display_name,
                plan=r.plan,
            )
            for r in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/tenants/{tenant_id}/usage",
    response_model=schemas.UsageReport,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **error_responses(NotFound, InvalidDateRange),
    },
)
async def usage(
    tenant_id: uuid.UUID,
    first: From,
    last: To,
    session: DBSession,
    admin: CurrentAdmin,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """One row per UTC day from ``from`` to ``to`` (at most 366 days), from the daily
    rollups; ``Accept: text/csv`` answers the same as CSV."""
    days = await reports.usage_report(session, admin, tenant_id, first, last)
    if accept and "text/csv" in accept:
        return Response(reports.usage_csv(days), media_type="text/csv")
    report = schemas.UsageReport(items=days)
    return Response(report.model_dump_json(), media_type="application/json")


@router.get(
    "/tenants/{tenant_id}/ledger/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **error_responses(NotFound, InvalidDateRange),
    },
)
async def export_ledger(
    tenant_id: uuid.UUID,
    first: From,
    last: To,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> StreamingResponse:
    """Every ledger entry of the tenant made from ``from`` to ``to`` (UTC days), in time
    order, as a CSV streamed in batches: ``id, at, user, kind, amount, balance_after,
    reference, batch_id, job_id``."""
    await reports.check_export(session, admin, tenant_id, first, last)
    rows = reports.export_ledger(request.app.state.db, tenant_id, first, last)
    name = f"ledger-{tenant_id}-{first}-{last}.csv"
    return StreamingResponse(
        rows,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
