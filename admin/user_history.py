"""A user's history for support and operators: the ledger with its running balance, and the
latest jobs. Reads only, for every admin role within its reach (another tenant: 404).

The ledger goes back page by page from the newest entry through billing.user_ledger (the
same reading as the user's own ``GET /ledger``); the jobs through the jobs' own
``(user_id, created_at, id)`` index. Neither counts or scans the ledger.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.dependencies import AdminPrincipal, ensure_tenant_access
from app.core.errors import InvalidCursor
from app.jobs import service as jobs
from app.jobs.repository import JobRecord
from app.tenancy import service as tenancy
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


async def ledger(
    session: AsyncSession,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    external_id: str,
    *,
    cursor: str | None,
    limit: int,
) -> LedgerPage:
    """The user's entries newest first, after ``cursor``; each with ``balance_after``."""
    ensure_tenant_access(admin, tenant_id, write=False)
    before = parse_before(cursor)
    user = await tenancy.get_user(session, tenant_id, external_id)
    return await user_ledger.page(session, user.id, before=before, limit=min(limit, MAX_PAGE))


async def recent_jobs(
    session: AsyncSession,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    external_id: str,
    *,
    limit: int,
) -> list[JobRecord]:
    """The user's latest jobs, newest first."""
    ensure_tenant_access(admin, tenant_id, write=False)
    user = await tenancy.get_user(session, tenant_id, external_id)
    return await jobs.list_jobs(
        session, user.id, status=None, before=None, limit=min(limit, MAX_PAGE)
    )
