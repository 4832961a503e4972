"""Bulk recharge: up to 10,000 users credited in one transaction with set-based SQL.

A batch is validated entry by entry and then applied with three statements whatever its
size: resolve external ids and lock their accounts in id order (one SELECT ... FOR UPDATE
over ``unnest``), then one statement that credits every account, writes one ledger entry
per user and debits the tenant's issuance account once. Two batches touching the same
users lock them in the same order, so they queue instead of deadlocking.

Entry rules, checked in this order (codes in ``failed_users``):

- ``InvalidEntry``: the entry is not an object with a non-empty string ``user``;
- ``DuplicateEntry``: the user already appeared earlier in the batch. The first occurrence
  is the one that counts; every later one fails, whatever its amount;
- ``InvalidAmount``: the amount is not an integer in 1..max_amount (booleans, floats and
  strings are refused, ``10`` is fine, ``10.0`` and ``"10"`` are not);
- ``UserNotFound``: no such external id in this tenant;
- ``AccountFrozen``: the user's account is frozen.

Modes: ``soft`` (default) applies every good entry and reports the rest; ``atomic``
applies nothing when any entry is bad and stores the batch as ``rejected``. A batch whose
total exceeds the tenant's ``approval_threshold`` is stored ``pending_approval`` with its
good entries (in request order) and applied when a different admin approves it; the entries
are checked again then (a user frozen meanwhile fails as AccountFrozen, with the index the
entry had in the request).

Report counts: ``requested`` entries in the call; ``failed`` entries refused;
``succeeded`` entries credited (for a pending batch: the entries that approval will
credit; for a rejected one: 0); ``total_amount`` the Tokens credited (or to be credited).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    InvalidAmount,
    NotFound,
    storable_form,
    storable_text,
)
from billing import metrics
from billing import repository as repo

MODES = ("soft", "atomic")
MAX_REASON = 1000
MAX_OPERATOR = 320


class TooManyEntries(BadRequest):
    code = "TooManyEntries"


class RequestInvalid(AppError):
    code, status = "ValidationError", 422


@dataclass(frozen=True)
class BulkRequest:
    """A parsed body: raw user and amount values (checked per entry later)."""

    users: list[Any]
    amounts: list[Any]
    mode: str = "soft"
    reason: str | None = None
    operator: str | None = None


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

    def as_dict(self) -> dict[str, Any]:
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
        }


def _count_codes(failures: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in failures:
        counts[f["code"]] = counts.get(f["code"], 0) + 1
    return counts


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# ---------------------------------------------------------------------------------------
# Parsing: lenient per entry, strict about the envelope
# ---------------------------------------------------------------------------------------


def parse_bulk_request(payload: Any, *, max_entries: int, max_amount: int) -> BulkRequest:
    """Accepts ``{users, amount}`` or ``{entries: [{user, amount}]}``; see module docs.

    Envelope problems fail the call (422 ValidationError, 400 TooManyEntries or, for the
    shared ``amount`` of the users shape, 400 InvalidAmount); entry problems do not.
    """
    if not isinstance(payload, dict):
        raise RequestInvalid("The body must be a JSON object")
    has_users, has_entries = "users" in payload, "entries" in payload
    if has_users == has_entries:
        raise RequestInvalid("Send either 'users' with 'amount', or 'entries'")
    items = payload["users"] if has_users else payload["entries"]
    where = "users" if has_users else "entries"
    if not isinstance(items, list):
        raise RequestInvalid(f"'{where}' must be a list")
    if not items:
        raise RequestInvalid(f"'{where}' is empty")
    if len(items) > max_entries:
        raise TooManyEntries(f"At most {max_entries} entries per batch, got {len(items)}")

    mode = payload.get("mode", "soft")
    if mode not in MODES:
        raise RequestInvalid("'mode' is 'soft' or 'atomic'")
    reason = _optional_text(payload, "reason", MAX_REASON)
    operator = _optional_text(payload, "operator", MAX_OPERATOR)

    if has_users:
        if "amount" not in payload:
            raise RequestInvalid("'amount' is required with 'users'")
        amount = payload["amount"]
        if _amount_problem(amount, max_amount):
            raise InvalidAmount(f"'amount' must be an integer from 1 to {max_amount}")
        return BulkRequest(list(items), [amount] * len(items), mode, reason, operator)

    users: list[Any] = []
    amounts: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            users.append(item.get("user"))
            amounts.append(item.get("amount"))
        else:
            users.append(None)
            amounts.append(None)
    return BulkRequest(users, amounts, mode, reason, operator)


def _optional_text(payload: dict[str, Any], name: str, limit: int) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not _is_text(value, limit):
        raise RequestInvalid(
            f"'{name}' must be a string of at most {limit} characters, without NUL "
            "or unpaired surrogates"
        )
    return value


def _is_text(value: Any, limit: int) -> bool:
    """A non-empty string of at most ``limit`` characters that the database can store."""
    return isinstance(value, str) and 0 < len(value) <= limit and storable_text(value)


def _amount_problem(amount: Any, max_amount: int) -> bool:
    return type(amount) is not int or not 1 <= amount <= max_amount


# ---------------------------------------------------------------------------------------
# Submit, approve, read
# ---------------------------------------------------------------------------------------


@dataclass
class _Checked:
    accounts: list[int] = field(default_factory=list)
    amounts: list[int] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


def _failure(index: int | None, user: Any, code: str, message: str) -> dict[str, Any]:
    return {
        # Reported back, so stored: what the database cannot hold is shown escaped.
        "user": storable_form(user) if isinstance(user, str) else None,
        "code": code,
        "message": message,
        "index": index,
    }


async def submit(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    bulk: BulkRequest,
    *,
    max_amount: int,
    created_by: uuid.UUID | None,
    created_by_email: str | None,
) -> BatchReport:
    """Validate and apply (or park for approval, or reject) one batch.

    A batch's Idempotency-Key is its route's, kept for good (billing.endpoints)."""
    tenant = await repo.run(session, repo.TENANT_FOR_BATCH, {"tenant_id": tenant_id})
    if tenant is None:
        raise NotFound("Tenant not found")
    operator = bulk.operator or created_by_email
    batch = await repo.run(
        session,
        repo.INSERT_BATCH,
        {
            "tenant_id": tenant_id,
            "mode": bulk.mode,
            "requested": len(bulk.users),
            "reason": bulk.reason,
            "operator": operator,
            "created_by": created_by,
            "created_by_email": created_by_email,
        },
    )
    batch_id = batch.id

    failures: list[dict[str, Any]] = []
    first: dict[str, tuple[int, int]] = {}  # user -> (index, amount) of its first occurrence
    seen: set[str] = set()
    for index, (user, amount) in enumerate(zip(bulk.users, bulk.amounts, strict=True)):
        if not _is_text(user, 255):
            failures.append(
                _failure(index, user, "InvalidEntry", "An entry is an object with a 'user' string")
            )
        elif user in seen:
            failures.append(
                _failure(
                    index, user, "DuplicateEntry", "This user already appears earlier in the batch"
                )
            )
        elif _amount_problem(amount, max_amount):
            seen.add(user)
            failures.append(
                _failure(
                    index,
                    user,
                    "InvalidAmount",
                    f"The amount must be an integer from 1 to {max_amount}",
                )
            )
        else:
            seen.add(user)
            first[user] = (index, amount)

    checked = await _check_accounts(session, tenant_id, first)
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
        succeeded, total = await _apply(
            session, tenant_id, batch_id, checked, reason=bulk.reason, operator=operator
        )
    row = await repo.run(
        session,
        repo.FINISH_BATCH,
        {
            "batch_id": batch_id,
            "status": status,
            "succeeded": succeeded,
            "failed": len(failures),
            "total_amount": total,
            "failed_users": orjson.dumps(failures).decode(),
            "pending_users": pending_users,
            "pending_amounts": pending_amounts,
        },
    )
    report = _report(row, failed_users=failures)
    metrics.bulk_batch(session, status, _count_codes(failures))
    return report


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

    Failures found now carry the index the entry had in the request, like those found at
    submit.
    """
    row = await repo.run(
        session, repo.BATCH_FOR_APPROVAL, {"batch_id": batch_id, "tenant_id": tenant_id}
    )
    if row is None or row.status == "processing":
        raise NotFound("Batch not found")
    if row.status == "rejected":
        raise Conflict("This batch was rejected; nothing can approve it. Send a new batch.")
    if row.status != "pending_approval":
        return _report(row), False
    if row.created_by is not None and row.created_by == approved_by:
        raise Forbidden("A batch must be approved by a different admin than the one who sent it")

    users, amounts = row.pending_users or [], row.pending_amounts or []
    wanted = {
        user: (index, amount)
        for user, amount, index in zip(users, amounts, _pending_indices(row), strict=True)
    }
    checked = await _check_accounts(session, tenant_id, wanted)
    failures = sorted(list(row.failed_users) + checked.failures, key=_by_index)
    if row.mode == "atomic" and checked.failures:
        status, succeeded, total = "rejected", 0, 0
    else:
        status = "applied"
        succeeded, total = await _apply(
            session, tenant_id, batch_id, checked, reason=row.reason, operator=row.operator
        )
    updated = await repo.run(
        session,
        repo.APPROVE_BATCH,
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
    row = await repo.run(session, repo.BATCH_BY_ID, {"batch_id": batch_id, "tenant_id": tenant_id})
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
    )


# ---------------------------------------------------------------------------------------
# The set-based part
# ---------------------------------------------------------------------------------------


async def _check_accounts(
    session: AsyncSession, tenant_id: uuid.UUID, wanted: Mapping[str, tuple[int | None, int]]
) -> _Checked:
    """Lock the accounts of ``wanted`` users (id order) and split them into good and failed."""
    checked = _Checked()
    if not wanted:
        return checked
    names = list(wanted)
    rows = await _resolve_and_lock(session, tenant_id, names)
    if len(rows) < len(names):
        # Usually unknown users; but a user without an account gets one, then we look again.
        missing = [n for n in names if n not in rows]
        result = await session.execute(
            repo.USERS_WITHOUT_ACCOUNT, {"tenant_id": tenant_id, "external_ids": missing}
        )
        accountless = list(result.scalars())
        if accountless:
            await repo.open_user_accounts(session, tenant_id, accountless)
            rows = await _resolve_and_lock(session, tenant_id, names)

    good: list[tuple[int, int, str]] = []
    for user, (index, amount) in wanted.items():
        found = rows.get(user)
        if found is None:
            checked.failures.append(
                _failure(index, user, "UserNotFound", "No user with this external id in the tenant")
            )
        elif found[1] != "active":
            checked.failures.append(
                _failure(index, user, "AccountFrozen", "This user's Token account is frozen")
            )
        else:
            good.append((found[0], amount, user))
    good.sort()
    checked.accounts = [g[0] for g in good]
    checked.amounts = [g[1] for g in good]
    checked.users = [g[2] for g in good]
    return checked


async def _resolve_and_lock(
    session: AsyncSession, tenant_id: uuid.UUID, names: Sequence[str]
) -> dict[str, tuple[int, str]]:
    """external id -> (account id, status), the accounts locked in id order."""
    rows = await repo.resolve_and_lock(session, tenant_id, list(names))
    return {r[0]: (r[1], r[2]) for r in rows}


async def _apply(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    batch_id: uuid.UUID,
    checked: _Checked,
    *,
    reason: str | None,
    operator: str | None,
) -> tuple[int, int]:
    if not checked.accounts:
        return 0, 0
    issuance = await repo.run(
        session, repo.SYSTEM_ACCOUNT, {"tenant_id": tenant_id, "kind": "issuance"}
    )
    if issuance is None:
        await repo.open_tenant_accounts(session, tenant_id)
        issuance = await repo.run(
            session, repo.SYSTEM_ACCOUNT, {"tenant_id": tenant_id, "kind": "issuance"}
        )
        assert issuance is not None
    row = await repo.bulk_credit(
        session,
        tenant_id=tenant_id,
        issuance_id=issuance.id,
        batch_id=batch_id,
        account_ids=checked.accounts,
        amounts=checked.amounts,
        reason=reason,
        operator=operator,
    )
    # The accounts are locked and were checked active under the lock: all must be credited.
    if row["credited"] != len(checked.accounts):
        raise AppError("Bulk recharge credited fewer accounts than it locked")
    metrics.tokens_moved(session, tenant_id, "recharge", int(row["total"]))
    return int(row["credited"]), int(row["total"])
