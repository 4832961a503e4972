"""Admin use case of the user import: rows as sent (parsed JSON), each bad one reported by
index, the others created in one statement; a row's ``plan`` puts the user, new or
existing, on that plan of the tenant (``app.tenancy.plans``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.dependencies import AdminPrincipal, ensure_tenant_access
from app.core import audit
from app.core.errors import (
    InvalidDisplayName,
    InvalidEmail,
    InvalidEntry,
    InvalidExternalId,
    PlanNotFound,
    TooManyEntries,
    storable_form,
)
from app.core.settings import Settings
from app.tenancy import plans
from app.tenancy import service as tenancy
from billing import service as billing


@dataclass(frozen=True)
class ImportFailure:
    index: int  # in the request's ``users``
    external_id: str | None  # None when the row's was not a string
    code: str
    message: str


@dataclass(frozen=True)
class ImportReport:
    created: int
    existing: int
    failed: list[ImportFailure]


def _row_problem(row: Any) -> ImportFailure | None:
    """Why an import row has the wrong JSON shape (index 0: the caller sets it), or None.
    Its values are checked by tenancy.import_users."""
    if not isinstance(row, dict):
        return ImportFailure(0, None, InvalidEntry.code, "A row is an object with an 'external_id'")
    external_id = row.get("external_id")
    if not isinstance(external_id, str):
        return ImportFailure(
            0, None, InvalidExternalId.code, "external_id is required and must be a string"
        )
    shown = storable_form(external_id[:300])
    if not isinstance(row.get("email"), str | None):
        return ImportFailure(0, shown, InvalidEmail.code, "email must be a string")
    if not isinstance(row.get("display_name"), str | None):
        return ImportFailure(0, shown, InvalidDisplayName.code, "display_name must be a string")
    if not isinstance(row.get("plan"), str | None):
        return ImportFailure(0, shown, PlanNotFound.code, "plan must be a plan's name")
    return None


def _plan_of(row: Any) -> str | None:
    plan = row.get("plan") if isinstance(row, dict) else None
    return plan if isinstance(plan, str) else None


async def import_users(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    settings: Settings,
    tenant_id: uuid.UUID,
    rows: Sequence[Any],
) -> ImportReport:
    """Import the rows as sent (parsed JSON): each bad one is reported in ``failed`` with
    its index in ``rows``, whether its JSON types are wrong (checked here) or its values
    (checked by tenancy.import_users); the others are imported."""
    ensure_tenant_access(admin, tenant_id, write=True)
    await tenancy.get_tenant(session, tenant_id)
    if len(rows) > settings.bulk_max_entries:
        raise TooManyEntries(
            f"At most {settings.bulk_max_entries} users per import, got {len(rows)}"
        )
    failed: list[ImportFailure] = []
    entries: list[tenancy.ImportEntry] = []
    positions: list[int] = []  # the index in ``rows`` of each of ``entries``
    known = await plans.plan_ids_by_name(session, tenant_id, [p for p in map(_plan_of, rows) if p])
    wanted: dict[str, int] = {}  # external id -> plan id, of the rows that name a plan
    for index, row in enumerate(rows):
        problem = _row_problem(row)
        if problem is None and _plan_of(row) and _plan_of(row) not in known:
            problem = ImportFailure(
                0, row["external_id"][:300], PlanNotFound.code, "No plan of this name"
            )
        if problem is not None:
            failed.append(replace(problem, index=index))
            continue
        entries.append(
            tenancy.ImportEntry(row["external_id"], row.get("email"), row.get("display_name"))
        )
        positions.append(index)
        if _plan_of(row):
            wanted.setdefault(row["external_id"], known[_plan_of(row)])
    result = await tenancy.import_users(session, tenant_id, entries)
    failed.extend(
        ImportFailure(positions[f.index], f.external_id, f.code, f.message) for f in result.failed
    )
    failed.sort(key=lambda f: f.index)
    if result.created_user_ids:
        await billing.open_user_accounts(session, tenant_id, result.created_user_ids)
    refused = {f.external_id for f in result.failed}
    await plans.assign_by_external_id(
        session, tenant_id, {e: p for e, p in wanted.items() if e not in refused}
    )
    await audit.record(
        session,
        request=request,
        actor=admin,
        action="user.import",
        tenant_id=tenant_id,
        target=f"tenant:{tenant_id}",
        details={
            "requested": len(rows),
            "created": result.created,
            "existing": result.existing,
            "failed": len(failed),
        },
    )
    return ImportReport(result.created, result.existing, failed)
