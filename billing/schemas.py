"""Pydantic shapes of the billing API (requests are documented here, parsed leniently)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.fields import Text


class BulkRechargeEntry(BaseModel):
    user: str = Field(description="The user's external id")
    amount: int = Field(ge=1, le=10**12, description="Tokens to credit, an integer from 1 to 10^12")


def _one_shape(schema: dict[str, Any]) -> None:
    schema.pop("required", None)
    schema["oneOf"] = [{"required": ["users", "amount"]}, {"required": ["entries"]}]


class BulkRechargeRequest(BaseModel):
    """Either ``users`` with one ``amount``, or ``entries`` with an amount each.

    Entries are checked one by one: a bad entry is reported in ``failed_users`` (soft mode)
    or rejects the batch (atomic mode); it never fails the whole call with 422. The body
    is read by billing.bulk_entries; this model is its documentation.
    """

    model_config = ConfigDict(json_schema_extra=_one_shape)

    users: list[str] = Field(min_length=1, max_length=10_000, description="External ids")
    amount: int = Field(
        ge=1, le=10**12, description="Tokens for each of `users` (400 InvalidAmount otherwise)"
    )
    entries: list[BulkRechargeEntry] = Field(min_length=1, max_length=10_000)
    mode: Literal["soft", "atomic"] = "soft"
    reason: Text | None = Field(None, min_length=1, max_length=1000)
    operator: Text | None = Field(
        None, min_length=1, max_length=320, description="Free text, e.g. a name"
    )
    expires_at: datetime | None = Field(
        None,
        description="RFC 3339 with a time zone, in the future: the entries are then grants "
        "whose unspent part leaves the balance at that time (an `expire` ledger entry)",
    )
    label: Text | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="The campaign of the grants (needs `expires_at`)",
    )


class FailedEntryOut(BaseModel):
    user: str | None
    code: str = Field(
        description="UserNotFound, AccountFrozen, InvalidAmount, DuplicateEntry or InvalidEntry"
    )
    message: str
    index: int | None = Field(
        description="Position of the entry in the request (also when found at approval); "
        "null only in reports of batches approved before this was recorded"
    )


class BatchReportOut(BaseModel):
    batch_id: uuid.UUID
    status: Literal["applied", "pending_approval", "rejected"]
    mode: Literal["soft", "atomic"]
    requested: int
    succeeded: int = Field(
        description="Entries credited; for a pending batch, the entries approval will credit"
    )
    failed: int
    total_amount: int = Field(description="Tokens credited (or to be credited when pending)")
    failed_users: list[FailedEntryOut]
    reason: str | None = None
    operator: str | None = None
    created_by: str | None = None
    approved_by: str | None = None
    created_at: datetime | None = None
    approved_at: datetime | None = None
    applied_at: datetime | None = None
    expires_at: datetime | None = Field(None, description="A batch of grants: when they expire")
    label: str | None = None


class BatchPreviewOut(BaseModel):
    """What a soft bulk recharge of this body would do now; nothing is applied or stored."""

    batch_id: None = None
    status: Literal["preview"]
    mode: Literal["soft", "atomic"]
    requested: int
    succeeded: int = Field(description="Entries that would be credited")
    failed: int
    total_amount: int = Field(description="Tokens that would be credited")
    failed_users: list[FailedEntryOut]
    approval_required: bool = Field(
        description="The total exceeds the tenant's approval threshold: the batch would wait "
        "for a second admin's approval"
    )


class MismatchOut(BaseModel):
    tenant_id: uuid.UUID
    account_id: int | None
    account_kind: str | None
    user_id: int | None
    check: Literal[
        "balance",
        "held",
        "open_holds",
        "zero_sum",
        "account_reference",
        "hold_entries",
        "job_hold",
        "usage_rollup",
    ]
    stored: int | None
    recomputed: int | None
    detail: str | None = None


class LedgerVerifyOut(BaseModel):
    ok: bool
    accounts_checked: int
    mismatches: list[MismatchOut]
    audit_chain_ok: bool
    audit_chain_problem: str | None = Field(
        None,
        description="Why the audit chain is not ok: the first bad row and what is wrong "
        "with it (edited, unknown key, rows removed after the anchored head...); null: ok",
    )
    tenant_id: uuid.UUID | None = Field(None, description="The tenant checked; null: all")


class ExpiringOut(BaseModel):
    amount: int = Field(description="Granted Tokens not spent yet that expire then")
    expires_at: datetime
    label: str | None = Field(description="The campaign they were granted in")


class BalanceOut(BaseModel):
    balance: int
    held: int
    available: int
    expiring: list[ExpiringOut] = Field(
        default_factory=list,
        description="What expires when, soonest first: the unspent part of each grant, "
        "by expiry time and campaign (included in balance)",
    )


class LedgerItemOut(BaseModel):
    id: int
    at: datetime
    kind: str
    amount: int = Field(
        description="Signed, from your side: + Tokens in (recharge, grant, refund, release), "
        "- Tokens out or reserved (capture, expire, hold)"
    )
    balance_after: int
    held_after: int
    reference: str | None


class LedgerPage(BaseModel):
    items: list[LedgerItemOut]
    next_cursor: str | None


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined, for ``openapi_extra``."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
