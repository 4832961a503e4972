"""A user's page for support and operators (``user_page``): the user as the Admin API shows
it, a page of its ledger with the running balance, its latest jobs and its API keys, read
with the user looked up once. Reads only, for every admin role within its reach (another
tenant: 404).

The ledger goes back page by page from the newest entry through billing.user_ledger (the
same reading as the user's own ``GET /ledger``); the jobs through the jobs' own
``(user_id, created_at, id)`` index. Neither counts or scans the ledger.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from admin import service as admin_service
from app.auth.dependencies import AdminPrincipal, ensure_tenant_access
from app.core.errors import InvalidCursor
from app.jobs import service as jobs
from app.jobs.repository import JobRecord
from app.tenancy import repository as tenancy_repository
from app.tenancy import service as tenancy
from app.tenancy.repository import ApiKeyRow, TenantRow
from billing import user_ledger
from billing.user_ledger import LedgerPage

MAX_PAGE = 100


def parse_before(cursor: str | None) -> int | None:
    """A ledger page's ``next_cursor`` (an entry id), or None for the newest page."""
    if not cursor:
        return None
    if not cursor.isascii() or not cursor.isdecimal() or not 0 < int(cursor) < 2**63:
        raise InvalidCursor("cursor is not one this service returned")
    return int(cursor)


@dataclass(frozen=True)
class UserPage:
    tenant: TenantRow
    user: admin_service.UserView
    ledger: LedgerPage
    jobs: list[JobRecord]
    api_keys: list[ApiKeyRow]


async def user_page(
    session: AsyncSession,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    external_id: str,
    *,
    cursor: str | None,
    ledger_limit: int,
    jobs_limit: int,
) -> UserPage:
    """The user (as GET /users/{id} shows it), a page of its ledger, its latest jobs and
    its API keys, in eight small queries."""
    ensure_tenant_access(admin, tenant_id, write=False)
    before = parse_before(cursor)
    tenant = await tenancy.get_tenant(session, tenant_id)
    user = await tenancy.get_user(session, tenant_id, external_id)
    return UserPage(
        tenant=tenant,
        user=await admin_service.user_view(session, user),
        ledger=await user_ledger.page(
            session, user.id, before=before, limit=min(ledger_limit, MAX_PAGE)
        ),
        jobs=await jobs.list_jobs(
            session, user.id, status=None, before=None, limit=min(jobs_limit, MAX_PAGE)
        ),
        api_keys=await tenancy_repository.list_api_keys(session, tenant_id, user.id),
    )
