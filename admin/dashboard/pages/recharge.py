"""Bulk recharge: /dashboard/bulk-recharge (upload a CSV or paste ids), its preview (the
service's dry run: nothing applied), the submit (soft or atomic, keyed: a double click or
a reload applies once), a batch's report with its failed rows as CSV, and the approval
queue, where an admin other than the sender approves or rejects a batch over the tenant's
threshold.

Everything goes through ``billing.bulk_recharge`` as the Admin API's routes do (preview,
``submit_as``, ``approve_as``, ``reject_as``, ``get_batch``, ``list_batches``); the input
is read by ``admin.dashboard.recharge_input``.
"""

from __future__ import annotations

import csv
import io
import uuid
from typing import Annotated, Any

from fastapi import File, Form, Request, UploadFile
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from admin import service as admin_service
from admin.dashboard import forms
from admin.dashboard import recharge_input as inputs
from admin.dashboard.pages.users import tenant_choices, tenant_of_page
from admin.dashboard.security import (
    CurrentOperator,
    Operator,
    WriteOperator,
    chosen_tenant,
    require_read,
    require_write,
)
from admin.dashboard.web import FLASHES, PREFIX, page_router, render, see_other
from app.core.deps import DBSession, RedisDep, SettingsDep
from app.core.errors import AppError, BadRequest, NotFound
from billing import bulk_recharge
from billing.bulk_recharge import BatchReport

router = page_router()

BASE = f"{PREFIX}/bulk-recharge"
RECENT_BATCHES = 20
QUEUE_SIZE = 100
SHOWN_FAILURES = 200  # on a page; the CSV download has them all
Field = Annotated[str, Form()]

FLASHES.update(
    {
        "batch-applied": "The batch was applied: its report is below.",
        "batch-pending": "The batch is over the tenant's approval threshold: it waits for "
        "another admin's approval.",
        "batch-rejected": "Nothing was applied: the batch was rejected.",
        "batch-sent-already": "This batch was sent already: nothing was applied again.",
    }
)
_OUTCOMES = {
    "applied": "batch-applied",
    "pending_approval": "batch-pending",
    "rejected": "batch-rejected",
}


def _url(tenant_id: uuid.UUID, path: str = "") -> str:
    return f"{BASE}{path}?tenant={tenant_id}"


def batch_url(tenant_id: uuid.UUID, batch_id: uuid.UUID | str) -> str:
    return _url(tenant_id, f"/batches/{batch_id}")


def may_decide(operator: Operator, batch: BatchReport) -> bool:
    """Whether the approve and reject buttons show: a writer, not the batch's sender."""
    sender = (batch.created_by or "").lower()
    return (
        operator.can_write
        and batch.status == "pending_approval"
        and (sender != operator.email.lower())
    )


# -- the form and the preview ---------------------------------------------------------------


@router.get(BASE)
async def recharge_form(
    request: Request, operator: CurrentOperator, session: DBSession
) -> Response:
    tenant_id = chosen_tenant(request, operator)
    return await _form_page(request, operator, session, tenant_id)


async def _form_page(
    request: Request,
    operator: Operator,
    session: AsyncSession,
    tenant_id: uuid.UUID | None,
    *,
    status_code: int = 200,
    error: str | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    tenant, batches, pending = None, [], []
    if tenant_id is not None:
        tenant = await admin_service.get_tenant(session, operator.admin, tenant_id)
        batches = await bulk_recharge.list_batches(
            session, tenant_id, status=None, limit=RECENT_BATCHES
        )
        pending = [b for b in batches if b.status == "pending_approval"]
    values = values or {}
    return render(
        request,
        "recharge.html",
        status_code=status_code,
        title="Bulk recharge",
        tenants=await tenant_choices(session, operator),
        tenant=tenant,
        batches=batches,
        pending=pending,
        error=error,
        values=values,
        form_key=values.get("idempotency_key") or forms.new_key(),
        batch_url=batch_url,
    )


@router.post(f"{BASE}/preview")
async def preview(
    request: Request,
    operator: CurrentOperator,
    session: DBSession,
    redis: RedisDep,
    settings: SettingsDep,
    file: Annotated[UploadFile | None, File()] = None,
    ids: Field = "",
    amount: Field = "",
    expires_at: Field = "",
    label: Field = "",
    reason: Field = "",
    idempotency_key: Field = "",
) -> Response:
    """Read the upload (or the pasted ids) and show what the batch would do; read-only,
    as the API's preview is, so auditors may check a file too."""
    tenant_id = tenant_of_page(request, operator)
    require_read(operator, tenant_id)
    values = {"ids": ids, "amount": amount, "expires_at": expires_at, "label": label,
              "reason": reason, "idempotency_key": idempotency_key}  # fmt: skip
    try:
        upload = await _read(file, ids, amount, expires_at, label)
        upload.reason = reason.strip() or None
        bulk = upload.request(max_entries=settings.bulk_max_entries, max_amount=settings.max_amount)
        report = await bulk_recharge.preview(
            session, tenant_id, bulk, max_amount=settings.max_amount
        )
    except AppError as exc:
        if exc.status >= 500 or isinstance(exc, NotFound):
            raise
        return await _form_page(
            request, operator, session, tenant_id,
            status_code=exc.status, error=exc.message, values=values,
        )  # fmt: skip
    saved = await inputs.stash(redis, operator.admin.id, tenant_id, upload)
    failures = report["failed_users"]
    return render(
        request,
        "recharge_preview.html",
        title="Bulk recharge preview",
        tenant=await admin_service.get_tenant(session, operator.admin, tenant_id),
        report=report,
        upload=upload,
        failures=[{**f, "line": _line(upload, f)} for f in failures[:SHOWN_FAILURES]],
        unknown=[f["user"] for f in failures if f["code"] == "UserNotFound"][:SHOWN_FAILURES],
        unknown_count=sum(1 for f in failures if f["code"] == "UserNotFound"),
        stash=saved,
        form_key=forms.checked_key(idempotency_key or forms.new_key()),
        submit_url=_url(tenant_id, "/submit"),
    )


async def _read(
    file: UploadFile | None, ids: str, amount: str, expires_at: str, label: str
) -> inputs.Upload:
    expiry = inputs.form_expiry(expires_at)
    inputs.check_expiry(expiry)
    campaign = label.strip() or None
    if file is not None and file.filename:
        data = await file.read(inputs.MAX_UPLOAD_BYTES + 1)
        if len(data) > inputs.MAX_UPLOAD_BYTES:
            raise BadRequest("The file is over 8 MiB: split it")
        return inputs.read_csv(data, file.filename, expires_at=expiry, label=campaign)
    if ids.strip():
        return inputs.read_pasted(ids, amount, expires_at=expiry, label=campaign)
    raise BadRequest("Choose a CSV file, or paste external ids with an amount")


def _line(upload: inputs.Upload, failure: dict[str, Any]) -> int | None:
    index = failure.get("index")
    return upload.lines[index] if isinstance(index, int) and index < len(upload.lines) else None


# -- submit ---------------------------------------------------------------------------------


@router.post(f"{BASE}/submit")
async def submit(
    request: Request,
    operator: WriteOperator,
    session: DBSession,
    redis: RedisDep,
    settings: SettingsDep,
    stash: Field = "",
    digest: Field = "",
    mode: Field = "soft",
    idempotency_key: Field = "",
) -> Response:
    tenant_id = tenant_of_page(request, operator)
    require_write(operator, tenant_id)
    if mode not in ("soft", "atomic"):
        raise BadRequest("mode is soft or atomic")

    async def operation() -> dict[str, Any]:
        upload = await inputs.unstash(redis, stash, operator.admin.id, tenant_id)
        bulk = upload.request(
            max_entries=settings.bulk_max_entries, max_amount=settings.max_amount, mode=mode
        )
        report = await bulk_recharge.submit_as(
            session, request, operator.admin, tenant_id, bulk, max_amount=settings.max_amount
        )
        return report.as_dict()

    answer, replayed = await forms.keyed_write(
        session,
        request,
        scope=f"tenant:{tenant_id}",
        key=idempotency_key,
        fields={"digest": digest, "mode": mode},
        operation=operation,
        permanent=True,  # as the API's: a batch is never applied twice, however late
    )
    flash = "batch-sent-already" if replayed else _OUTCOMES[answer["status"]]
    return see_other(batch_url(tenant_id, answer["batch_id"]), flash)


# -- a batch, its failed rows, the approval queue -------------------------------------------


@router.get(BASE + "/batches/{batch_id}")
async def batch_page(
    request: Request, batch_id: uuid.UUID, operator: CurrentOperator, session: DBSession
) -> Response:
    tenant_id = tenant_of_page(request, operator)
    require_read(operator, tenant_id)
    batch = await bulk_recharge.get_batch(session, tenant_id, batch_id)
    return render(
        request,
        "recharge_batch.html",
        title="Bulk recharge report",
        tenant=await admin_service.get_tenant(session, operator.admin, tenant_id),
        batch=batch,
        failures=batch.failed_users[:SHOWN_FAILURES],
        may_decide=may_decide(operator, batch),
        csv_url=_url(tenant_id, f"/batches/{batch_id}/failed.csv"),
        decide_url=lambda what: _url(tenant_id, f"/batches/{batch_id}/{what}"),
        new_key=forms.new_key,
        queue_url=_url(tenant_id, "/approvals"),
    )


@router.get(BASE + "/batches/{batch_id}/failed.csv")
async def failed_rows(
    request: Request, batch_id: uuid.UUID, operator: CurrentOperator, session: DBSession
) -> Response:
    """The batch's failed rows: ``row`` (1 for the file's first data row), ``user``,
    ``code`` and ``message``."""
    tenant_id = tenant_of_page(request, operator)
    require_read(operator, tenant_id)
    batch = await bulk_recharge.get_batch(session, tenant_id, batch_id)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["row", "user", "code", "message"])
    for f in batch.failed_users:
        index = f.get("index")
        writer.writerow([index + 1 if isinstance(index, int) else "", f["user"] or "",
                         f["code"], f["message"]])  # fmt: skip
    name = f"recharge-{batch_id}-failed.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.get(f"{BASE}/approvals")
async def approvals(request: Request, operator: CurrentOperator, session: DBSession) -> Response:
    tenant_id = chosen_tenant(request, operator)
    tenant, batches = None, []
    if tenant_id is not None:
        tenant = await admin_service.get_tenant(session, operator.admin, tenant_id)
        batches = await bulk_recharge.list_batches(
            session, tenant_id, status="pending_approval", limit=QUEUE_SIZE
        )
    return render(
        request,
        "recharge_approvals.html",
        title="Approval queue",
        tenants=await tenant_choices(session, operator),
        tenant=tenant,
        batches=batches,
        may_decide=lambda batch: may_decide(operator, batch),
        batch_url=batch_url,
        decide_url=lambda batch, what: (
            _url(tenant_id, f"/batches/{batch.batch_id}/{what}") if tenant_id else ""
        ),
        new_key=forms.new_key,
    )


@router.post(BASE + "/batches/{batch_id}/approve")
async def approve(
    request: Request,
    batch_id: uuid.UUID,
    operator: WriteOperator,
    session: DBSession,
    idempotency_key: Field = "",
) -> Response:
    return await _decide(request, batch_id, operator, session, idempotency_key, approve=True)


@router.post(BASE + "/batches/{batch_id}/reject")
async def reject(
    request: Request,
    batch_id: uuid.UUID,
    operator: WriteOperator,
    session: DBSession,
    idempotency_key: Field = "",
) -> Response:
    return await _decide(request, batch_id, operator, session, idempotency_key, approve=False)


async def _decide(
    request: Request,
    batch_id: uuid.UUID,
    operator: Operator,
    session: AsyncSession,
    key: str,
    *,
    approve: bool,
) -> Response:
    """Approve or reject through the service (which refuses the sender: 403)."""
    tenant_id = tenant_of_page(request, operator)
    require_write(operator, tenant_id)
    decide = bulk_recharge.approve_as if approve else bulk_recharge.reject_as

    async def operation() -> dict[str, Any]:
        report = await decide(session, request, operator.admin, tenant_id, batch_id)
        return report.as_dict()

    answer, _ = await forms.keyed_write(
        session,
        request,
        scope=f"tenant:{tenant_id}",
        key=key,
        fields={"batch_id": str(batch_id)},
        operation=operation,
    )
    return see_other(batch_url(tenant_id, batch_id), _OUTCOMES[answer["status"]])
