"""Bulk recharge: up to 10,000 users credited in one transaction with set-based SQL.

A batch is read and checked entry by entry (billing.bulk_entries, whose docstring lists
the entry rules and their codes), then applied with three statements whatever its size
(billing.bulk_apply). This module holds the use cases: submit, approve, read, and
preview (submit's checks without applying anything, for a dry run).

Modes: ``soft`` (default) applies every good entry and reports the rest; ``atomic``
applies nothing when any entry is bad and stores the batch as ``rejected``. A batch whose
total exceeds the tenant's ``approval_threshold`` is stored ``pending_approval`` with its
good entries (in request order) and applied when a different admin approves it; the entries
are checked again then (a user frozen meanwhile fails as AccountFrozen, with the index the
entry had in the request).

Report counts: ``requested`` entries in the call; ``failed`` entries refused;
``succeeded`` entries credited (for a pending batch: the entries that approval will
credit; for a rejected one: 0); ``total_amount`` the Tokens credited (or to be credited).

A batch's Idempotency-Key is its route's, kept for good (billing.endpoints).

An operator's submit, approval or rejection (the Admin API's routes and the dashboard's
pages alike) goes through ``submit_as``, ``approve_as`` and ``reject_as``: the use case and
its audit record. A pending batch may also be rejected by a different admin than its
sender (``reject``): nothing is credited and nothing can apply it any more.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.dependencies import AdminPrincipal, ensure_tenant_access
from app.core import audit
from app.core.errors import Conflict, Forbidden, NotFound
from billing import bulk_apply, bulk_entries, metrics
from billing import bulk_repository as bulk_repo
from billing import repository as repo
from billing.bulk_entries import BulkRequest


@dataclass
class BatchReport:
    batch_id: uuid.UUID
    status: str
    mode: str
    requested: int
    succeeded: int
    failed: int
    total_amount: int
    failed_users: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    operator: str | None = None
    created_by: str | None = None
    approved_by: str | None = None
    created_at: datetime | None = None
    approved_at: datetime | None = None
    applied_at: datetime | None = None
    expires_at: datetime | None = None
    label: str | None = None

    def as_dict(self) -> dict[str, Any]:
        # A batch of grants says when they expire; a recharge's report keeps its shape.
        grants = (
            {"expires_at": _iso(self.expires_at), "label": self.label}
            if self.expires_at is not None
            else {}
        )
        return {
            "batch_id": str(self.batch_id),
            "status": self.status,
            "mode": self.mode,
            "requested": self.requested,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "total_amount": self.total_amount,
            "failed_users": self.failed_users,
            "reason": self.reason,
            "operator": self.operator,
            "created_by": self.created_by,
            "approved_by": self.approved_by,
            "created_at": _iso(self.created_at),
            "approved_at": _iso(self.approved_at),
            "applied_at": _iso(self.applied_at),
            **grants,
        }


def _count_codes(failures: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in failures:
        counts[f["code"]] = counts.get(f["code"], 0) + 1
    return counts


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# ---------------------------------------------------------------------------------------
# Submit, approve, read
# ---------------------------------------------------------------------------------------


async def submit(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    bulk: BulkRequest,
    *,
    max_amount: int,
    created_by: uuid.UUID | None,
    created_by_email: str | None,
) -> BatchReport:
    """Validate and apply (or park for approval, or reject) one batch."""
    tenant = await repo.run(session, bulk_repo.TENANT_FOR_BATCH, {"tenant_id": tenant_id})
    if tenant is None:
        raise NotFound("Tenant not found")
    operator = bulk.operator or created_by_email
    batch = await repo.run(
        session,
        bulk_repo.INSERT_BATCH,
        {
            "tenant_id": tenant_id,
            "mode": bulk.mode,
            "requested": len(bulk.users),
            "reason": bulk.reason,
            "operator": operator,
            "created_by": created_by,
            "created_by_email": created_by_email,
            "expires_at": bulk.expires_at,
            "label": bulk.label,
        },
    )
    assert batch is not None  # an INSERT ... RETURNING
    first, failures = bulk_entries.check_entries(bulk, max_amount)
    checked = await bulk_apply.check_accounts(session, tenant_id, first)
    failures.extend(checked.failures)
    failures.sort(key=lambda f: f["index"])
    total = sum(checked.amounts)

    pending_users: list[str] | None = None
    pending_amounts: list[int] | None = None
    if bulk.mode == "atomic" and failures:
        status, succeeded, total = "rejected", 0, 0
    elif tenant.approval_threshold is not None and total > tenant.approval_threshold:
        status, succeeded = "pending_approval", len(checked.accounts)
        # In request order, not account order: approve() recovers each entry's index from
        # it (``_pending_indices``), the batch table having no column for them.
        in_order = sorted(
            zip(checked.users, checked.amounts, strict=True), key=lambda pair: first[pair[0]][0]
        )
        pending_users = [user for user, _ in in_order]
        pending_amounts = [amount for _, amount in in_order]
    else:
        status = "applied"
        succeeded, total = await bulk_apply.credit(
            session,
            tenant_id,
            batch.id,
            checked,
            reason=bulk.reason,
            operator=operator,
            expires_at=bulk.expires_at,
            label=bulk.label,
        )
    row = await repo.run(
        session,
        bulk_repo.FINISH_BATCH,
        {
            "batch_id": batch.id,
            "status": status,
            "succeeded": succeeded,
            "failed": len(failures),
            "total_amount": total,
            "failed_users": orjson.dumps(failures).decode(),
            "pending_users": pending_users,
            "pending_amounts": pending_amounts,
        },
    )
    metrics.bulk_batch(session, status, _count_codes(failures))
    return _report(row, failed_users=failures)


async def preview(
    session: AsyncSession, tenant_id: uuid.UUID, bulk: BulkRequest, *, max_amount: int
) -> dict[str, Any]:
    """What ``submit`` in soft mode would report for this batch, applying nothing: the
    same entry and account checks, no lock, and no batch, ledger or audit row. ``status``
    is ``preview``; ``succeeded`` and ``total_amount`` count the entries that would be
    credited; ``approval_required`` says whether the batch would wait for approval."""
    tenant = await repo.run(session, bulk_repo.TENANT_FOR_BATCH, {"tenant_id": tenant_id})
    if tenant is None:
        raise NotFound("Tenant not found")
    first, failures = bulk_entries.check_entries(bulk, max_amount)
    checked = await bulk_apply.check_accounts(session, tenant_id, first, apply=False)
    failures.extend(checked.failures)
    failures.sort(key=lambda f: f["index"])
    total = sum(checked.amounts)
    return {
        "batch_id": None,
        "status": "preview",
        "mode": bulk.mode,
        "requested": len(bulk.users),
        "succeeded": len(checked.accounts),
        "failed": len(failures),
        "total_amount": total,
        "failed_users": failures,
        "approval_required": tenant.approval_threshold is not None
        and total > tenant.approval_threshold,
    }


async def approve(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    batch_id: uuid.UUID,
    *,
    approved_by: uuid.UUID,
    approved_by_email: str,
) -> tuple[BatchReport, bool]:
    """Apply a pending batch; returns (report, whether this call changed it).

    By the batch's status:

    - ``pending_approval``: checked again and applied (or, atomic with a user frozen
      meanwhile, rejected). The admin who submitted it may not approve it (Forbidden).
    - ``applied``: its report, unchanged (False): a retry of the approve that applied it
      must not fail, and nothing is credited twice.
    - ``rejected`` (atomic at submit, or at an earlier approval): 409 Conflict. Nothing can
      apply it any more; send a new batch.
    - a batch of grants whose ``expires_at`` has passed: 409 Conflict, left pending.

    Failures found now carry the index the entry had in the request, like those found at
    submit.
    """
    row = await repo.run(
        session, bulk_repo.BATCH_FOR_APPROVAL, {"batch_id": batch_id, "tenant_id": tenant_id}
    )
    if row is None or row.status == "processing":
        raise NotFound("Batch not found")
    if row.status == "rejected":
        raise Conflict("This batch was rejected; nothing can approve it. Send a new batch.")
    if row.status != "pending_approval":
        return _report(row), False
    if row.created_by is not None and row.created_by == approved_by:
        raise Forbidden("A batch must be approved by a different admin than the one who sent it")
    if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
        # Grants credited now would only be taken back by the next expiry pass.
        raise Conflict(
            f"This batch's grants expired at {row.expires_at.isoformat()}, before it was "
            "approved; send a new batch with a later expires_at"
        )

    users, amounts = row.pending_users or [], row.pending_amounts or []
    wanted = {
        user: (index, amount)
        for user, amount, index in zip(users, amounts, _pending_indices(row), strict=True)
    }
    checked = await bulk_apply.check_accounts(session, tenant_id, wanted)
    failures = sorted(list(row.failed_users) + checked.failures, key=_by_index)
    if row.mode == "atomic" and checked.failures:
        status, succeeded, total = "rejected", 0, 0
    else:
        status = "applied"
        succeeded, total = await bulk_apply.credit(
            session,
            tenant_id,
            batch_id,
            checked,
            reason=row.reason,
            operator=row.operator,
            expires_at=row.expires_at,
            label=row.label,
        )
    updated = await repo.run(
        session,
        bulk_repo.APPROVE_BATCH,
        {
            "batch_id": batch_id,
            "status": status,
            "succeeded": succeeded,
            "failed": len(failures),
            "total_amount": total,
            "failed_users": orjson.dumps(failures).decode(),
            "approved_by": approved_by,
            "approved_by_email": approved_by_email,
        },
    )
    metrics.bulk_batch(session, status, _count_codes(checked.failures))
    return _report(updated, failed_users=failures), True


def _pending_indices(row: Any) -> list[int | None]:
    """The request index of each of a pending batch's entries.

    Every entry of the request is either in ``failed_users`` (with its index) or one of
    ``pending_users``, which submit() stores in request order: the pending entries hold the
    indices that did not fail, in order. None for each if the counts disagree, rather than
    a wrong index."""
    pending = row.pending_users or []
    failed = {f.get("index") for f in row.failed_users}
    left: list[int | None] = [i for i in range(row.requested) if i not in failed]
    if len(left) != len(pending):
        return [None] * len(pending)
    return left


def _by_index(failure: dict[str, Any]) -> tuple[bool, int]:
    index = failure.get("index")
    return (index is None, index or 0)


async def get_batch(
    session: AsyncSession, tenant_id: uuid.UUID, batch_id: uuid.UUID
) -> BatchReport:
    row = await repo.run(
        session, bulk_repo.BATCH_BY_ID, {"batch_id": batch_id, "tenant_id": tenant_id}
    )
    if row is None or row.status == "processing":
        raise NotFound("Batch not found")
    return _report(row)


def _report(row: Any, failed_users: list[dict[str, Any]] | None = None) -> BatchReport:
    return BatchReport(
        batch_id=row.id,
        status=row.status,
        mode=row.mode,
        requested=row.requested,
        succeeded=row.succeeded,
        failed=row.failed,
        total_amount=row.total_amount,
        failed_users=list(row.failed_users) if failed_users is None else failed_users,
        reason=row.reason,
        operator=row.operator,
        created_by=row.created_by_email,
        approved_by=row.approved_by_email,
        created_at=row.created_at,
        approved_at=row.approved_at,
        applied_at=row.applied_at,
        expires_at=row.expires_at,
        label=row.label,
    )


async def reject(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    batch_id: uuid.UUID,
    *,
    rejected_by: uuid.UUID,
    rejected_by_email: str,
) -> tuple[BatchReport, bool]:
    """Refuse a pending batch (its sender may not: four eyes, as for approval); returns
    (report, whether this call changed it). Rejecting a rejected batch again answers its
    report unchanged; an applied one is 409 Conflict."""
    row = await repo.run(
        session, bulk_repo.BATCH_FOR_APPROVAL, {"batch_id": batch_id, "tenant_id": tenant_id}
    )
    if row is None or row.status == "processing":
        raise NotFound("Batch not found")
    if row.status == "applied":
        raise Conflict("This batch was applied already; it cannot be rejected")
    if row.status != "pending_approval":
        return _report(row), False
    if row.created_by is not None and row.created_by == rejected_by:
        raise Forbidden("A batch must be rejected by a different admin than the one who sent it")
    updated = await repo.run(
        session,
        bulk_repo.REJECT_BATCH,
        {"batch_id": batch_id, "by": rejected_by, "by_email": rejected_by_email},
    )
    metrics.bulk_batch(session, "rejected", {})
    return _report(updated), True


async def list_batches(
    session: AsyncSession, tenant_id: uuid.UUID, *, status: str | None, limit: int
) -> list[BatchReport]:
    """The tenant's latest batches (with ``status``: only those), newest first, without
    their failed entries (a batch's own page reads them)."""
    rows = await session.execute(
        bulk_repo.LIST_BATCHES, {"tenant_id": tenant_id, "status": status, "limit": limit}
    )
    return [_report(row, failed_users=[]) for row in rows]


# ---------------------------------------------------------------------------------------
# An operator's writes: the use case and its audit record
# ---------------------------------------------------------------------------------------


async def submit_as(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    bulk: BulkRequest,
    *,
    max_amount: int,
) -> BatchReport:
    ensure_tenant_access(admin, tenant_id, write=True)
    report = await submit(
        session,
        tenant_id,
        bulk,
        max_amount=max_amount,
        created_by=admin.id,
        created_by_email=admin.email,
    )
    await _record(session, request, admin, "recharge.bulk", tenant_id, report)
    return report


async def approve_as(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    batch_id: uuid.UUID,
) -> BatchReport:
    ensure_tenant_access(admin, tenant_id, write=True)
    report, changed = await approve(
        session, tenant_id, batch_id, approved_by=admin.id, approved_by_email=admin.email
    )
    if changed:
        await _record(session, request, admin, "recharge.approve", tenant_id, report)
    return report


async def reject_as(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    batch_id: uuid.UUID,
) -> BatchReport:
    ensure_tenant_access(admin, tenant_id, write=True)
    report, changed = await reject(
        session, tenant_id, batch_id, rejected_by=admin.id, rejected_by_email=admin.email
    )
    if changed:
        await _record(session, request, admin, "recharge.reject", tenant_id, report)
    return report


async def _record(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    action: str,
    tenant_id: uuid.UUID,
    report: BatchReport,
) -> None:
    """The audit record of a batch's submit, approval or rejection, with its figures."""
    await audit.record(
        session,
        request=request,
        actor=admin,
        action=action,
        tenant_id=tenant_id,
        target=f"batch:{report.batch_id}",
        details={
            "status": report.status,
            "mode": report.mode,
            "requested": report.requested,
            "succeeded": report.succeeded,
            "failed": report.failed,
            "total_amount": report.total_amount,
            "reason": report.reason,
            "operator": report.operator,
        },
    )
