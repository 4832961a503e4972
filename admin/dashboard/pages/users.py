"""Users: /dashboard/users (a tenant's users: prefix search, sorts, keyset pages) and a
user's page (balance, expiring grants, plan, ledger with its running balance, latest jobs,
API keys, and the write forms of ``user_actions``).

The list is the users report (``admin.reports.list_users``: its indexes, its cursors);
the user's page reads ``admin.service`` and ``admin.user_history``. Nothing here counts.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from admin import reports, user_history
from admin import service as admin_service
from admin.dashboard import forms
from admin.dashboard.security import CurrentOperator, Operator, chosen_tenant
from admin.dashboard.web import PREFIX, page_router, render
from admin.report_repository import USER_SORTS
from app.core.deps import DBSession
from app.core.errors import BadRequest, InvalidText, NotFound
from app.core.fields import clean_text
from app.tenancy.repository import TenantRow

router = page_router()

PAGE_SIZE = 50
LEDGER_PAGE = 25
RECENT_JOBS = 10
TENANT_CHOICES = 500  # as the overview: platform operators choose among the first tenants
SORT_LABELS = {
    "external_id": "External id (A→Z)",
    "-created_at": "Newest first",
    "created_at": "Oldest first",
    "-balance": "Largest balance",
    "balance": "Smallest balance",
}
assert set(SORT_LABELS) == set(USER_SORTS)  # the report's sorts, every one of them


def user_url(tenant_id: uuid.UUID, external_id: str, **query: str) -> str:
    """The user's page (external ids are quoted whole: they may hold any character)."""
    params = urlencode({"tenant": str(tenant_id), **query})
    return f"{PREFIX}/users/{quote(external_id, safe='')}?{params}"


def tenant_of_page(request: Request, operator: Operator) -> uuid.UUID:
    """The page's tenant (``?tenant=``); a page about one user needs one (404 without)."""
    tenant_id = chosen_tenant(request, operator)
    if tenant_id is None:
        raise NotFound("Choose a tenant first")
    return tenant_id


async def tenant_choices(session: AsyncSession, operator: Operator) -> list[TenantRow]:
    if operator.tenant_id is not None:
        return []
    return await admin_service.list_tenants(
        session, operator.admin, after_slug=None, limit=TENANT_CHOICES
    )


@router.get(f"{PREFIX}/users")
async def users_list(
    request: Request,
    operator: CurrentOperator,
    session: DBSession,
    q: str = "",
    sort: str = "external_id",
    status: str = "",
    cursor: str = "",
) -> Response:
    tenant_id = chosen_tenant(request, operator)
    if sort not in USER_SORTS:
        raise BadRequest(f"sort must be one of {', '.join(USER_SORTS)}")
    if status not in ("", "active", "frozen"):
        raise BadRequest("status is active or frozen")
    if len(q) > 255 or not clean_text(q):
        raise InvalidText("q: at most 255 characters, without control characters")
    tenant, page = None, None
    if tenant_id is not None:
        tenant = await admin_service.get_tenant(session, operator.admin, tenant_id)
        page = await reports.list_users(
            session,
            operator.admin,
            tenant_id,
            prefix=q or None,
            status=status or None,
            sort=sort,
            cursor=cursor or None,
            limit=PAGE_SIZE,
        )
    query = {"tenant": str(tenant_id or ""), "q": q, "sort": sort, "status": status}
    return render(
        request,
        "users.html",
        title="Users",
        tenants=await tenant_choices(session, operator),
        tenant=tenant,
        page=page,
        q=q,
        sort=sort,
        status=status,
        sorts=SORT_LABELS,
        first_url=f"{PREFIX}/users?{urlencode(query)}",
        next_url=(
            f"{PREFIX}/users?{urlencode({**query, 'cursor': page.next_cursor})}"
            if page and page.next_cursor
            else None
        ),
        user_url=user_url,
    )


@router.get(PREFIX + "/users/{external_id}")
async def user_page(
    request: Request,
    external_id: str,
    operator: CurrentOperator,
    session: DBSession,
    ledger: str = "",
) -> Response:
    tenant_id = tenant_of_page(request, operator)
    return await render_user(request, operator, session, tenant_id, external_id, ledger=ledger)


async def render_user(
    request: Request,
    operator: Operator,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    external_id: str,
    *,
    ledger: str = "",
    status_code: int = 200,
    error: tuple[str, str] | None = None,
    values: dict[str, Any] | None = None,
) -> HTMLResponse:
    """The user's page; after a refused write, with ``error`` = (form, message) shown at
    that form, and the values it was sent with."""
    found = await user_history.user_page(
        session,
        operator.admin,
        tenant_id,
        external_id,
        cursor=ledger or None,
        ledger_limit=LEDGER_PAGE,
        jobs_limit=RECENT_JOBS,
    )
    user, entries = found.user, found.ledger
    values = values or {}
    return render(
        request,
        "user.html",
        status_code=status_code,
        title=f"User {external_id}",
        tenant=found.tenant,
        user=user,
        has_plan=hasattr(user, "plan"),  # the plans feature
        entries=entries,
        jobs=found.jobs,
        keys=found.api_keys,
        error=error,
        values=values,
        adjust_key=values.get("idempotency_key") or forms.new_key(),
        here=user_url(tenant_id, external_id),
        action=lambda what: (
            f"{PREFIX}/users/{quote(external_id, safe='')}/{what}?tenant={tenant_id}"
        ),
        older_url=(
            user_url(tenant_id, external_id, ledger=entries.next_cursor)
            if entries.next_cursor
            else None
        ),
        job_url=lambda job_id: f"{PREFIX}/jobs/{job_id}?tenant={tenant_id}",
    )
