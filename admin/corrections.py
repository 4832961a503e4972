"""Corrections by an operator: a signed adjustment of one user's Tokens, and the refund of
what a job was charged. Each is one ledger entry (billing), with its reason and operator,
and one audit record, in the request's transaction.

Both write the request's Idempotency-Key on their ledger entry too (``admin:<key>``, a
namespace of its own beside the keys that code writes): the route's key store answers a
replay while it keeps the key, and the ledger's own unique key still refuses a second
movement under that key after the store has purged it.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from admin import repository
from app.auth.dependencies import AdminPrincipal, ensure_tenant_access
from app.core import audit
from app.core.errors import Conflict, InvalidAmount, NotFound
from app.jobs import repository as jobs
from app.tenancy import service as tenancy
from billing import holds
from billing import service as billing
from billing.service import Movement


def _ledger_key(request_key: str | None) -> str | None:
    return None if request_key is None else f"admin:{request_key}"


def entry_json(
    movement: Movement,
    *,
    user: str | None,
    reason: str,
    operator: str,
    reference: str | None = None,
    job_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The contract's entry: the ledger row, signed from the user's side."""
    return {
        "id": movement.entry_id,
        "at": movement.at,
        "user": user,
        "kind": movement.kind,
        "amount": movement.amount,
        "balance_after": movement.balance_after,
        "held_after": movement.held_after,
        "reference": reference,
        "reason": reason,
        "operator": operator,
        "job_id": str(job_id) if job_id is not None else None,
    }


async def adjust_user(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    external_id: str,
    *,
    amount: int,
    reason: str,
    request_key: str | None,
) -> dict[str, Any]:
    """Credit (amount > 0) or debit (amount < 0) the user; a debit takes granted Tokens
    first, as spending does, and never more than is available (InsufficientBalance)."""
    ensure_tenant_access(admin, tenant_id, write=True)
    await tenancy.get_tenant(session, tenant_id)
    user = await tenancy.get_user(session, tenant_id, external_id)
    movement = await billing.adjust(
        session,
        tenant_id,
        user.id,
        amount,
        reason=reason,
        operator=admin.email,
        idempotency_key=_ledger_key(request_key),
    )
    entry = entry_json(movement, user=external_id, reason=reason, operator=admin.email)
    if movement.replayed:  # its key was purged from the store, not from the ledger
        return entry
    await audit.record(
        session,
        request=request,
        actor=admin,
        action="user.adjust",
        tenant_id=tenant_id,
        target=f"user:{external_id}",
        details={"amount": amount, "reason": reason, "entry_id": movement.entry_id},
    )
    return entry


async def refund_job(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    *,
    amount: int | None,
    reason: str,
    request_key: str | None,
) -> dict[str, Any]:
    """Give back ``amount`` (default: all that is left) of what the job was charged:
    never more than charged minus already refunded (InvalidAmount, with ``refundable``).
    A job that was not charged (still running, failed, canceled or not metered) has
    nothing to refund (Conflict)."""
    ensure_tenant_access(admin, tenant_id, write=True)
    await tenancy.get_tenant(session, tenant_id)
    job = await jobs.get_job(session, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound("Job not found")
    hold = None
    if job.hold_reference is not None:
        hold = await holds.get_hold(session, tenant_id, job.hold_reference)
    if hold is None or hold.status != "captured":
        raise Conflict("This job was not charged: there is nothing to refund")
    refundable = hold.captured - hold.refunded
    if amount is None:
        amount = refundable
    if not 1 <= amount <= refundable:
        raise InvalidAmount(
            f"Cannot refund {amount}: {refundable} of the {hold.captured} Tokens charged "
            "are left to refund",
            details={"refundable": refundable},
        )
    # The statement checks the same bound again under the hold's lock (concurrent refunds).
    movement = await holds.refund(
        session,
        tenant_id,
        hold.reference,
        amount,
        idempotency_key=_ledger_key(request_key),
        operator=admin.email,
        reason=reason,
    )
    user = await repository.external_id_of_user(session, job.user_id)
    entry = entry_json(
        movement,
        user=user,
        reason=reason,
        operator=admin.email,
        reference=hold.reference,
        job_id=job_id,
    )
    if movement.replayed:
        return entry
    await audit.record(
        session,
        request=request,
        actor=admin,
        action="job.refund",
        tenant_id=tenant_id,
        target=f"job:{job_id}",
        details={"amount": movement.amount, "reason": reason, "entry_id": movement.entry_id},
    )
    return entry
