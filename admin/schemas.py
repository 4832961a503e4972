"""Request and response bodies of the admin API."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from app.core.errors import InvalidAmount
from app.core.fields import Email, Text, token_amount
from app.tenancy import plan_schedule
from app.tenancy.plans import PLAN_NAME_PATTERN
from app.tenancy.service import SLUG_PATTERN
from billing.schemas import ExpiringOut


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- tenants -------------------------------------------------------------------------------


class TenantCreate(_In):
    name: Text = Field(min_length=1, max_length=200)
    # The pattern is documented, checked by the service (400 InvalidSlug, not 422).
    slug: str | None = Field(
        default=None,
        max_length=64,
        description="a-z, 0-9 and '-'; derived from name if absent",
        json_schema_extra={"pattern": SLUG_PATTERN},
    )


# http(s), a host name or address, an optional port and path: no credentials, no spaces.
WEBHOOK_URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$"


class TenantUpdate(_In):
    name: Text | None = Field(default=None, min_length=1, max_length=200)
    approval_threshold: token_amount(1, 10**12) | None = Field(  # type: ignore[valid-type]
        default=None,
        description="Bulk recharges above this total wait for a second admin; null turns it off",
    )
    status: Literal["active", "suspended"] | None = Field(
        default=None, description="platform admins only"
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=WEBHOOK_URL_PATTERN,
        description="Where the tenant's account events (an anomaly rule broken) are POSTed, "
        "signed like job webhooks; null turns them off. Its address is vetted as a job "
        "webhook's is, when it is called (a private address is never called)",
    )


class TenantOut(BaseModel):
    id: uuid.UUID
    name: str
    slug: str
    status: str
    approval_threshold: int | None = None
    created_at: datetime | None = None
    webhook_url: str | None = None


class TenantPage(BaseModel):
    items: list[TenantOut]
    next_cursor: str | None


# -- admins --------------------------------------------------------------------------------


# Roles are plain strings here, checked by admin.service.create_admin: a role that is not
# allowed is 400 InvalidRole (the README), not a 422 from a Literal.
TENANT_ROLES = ("tenant_admin", "auditor")
PLATFORM_ROLES = ("platform_admin", "auditor")


class TenantAdminCreate(_In):
    email: Email = Field(max_length=320)
    # At least 10 characters: documented, checked by the service (400 WeakPassword).
    password: str = Field(
        max_length=1024, description="at least 10 characters", json_schema_extra={"minLength": 10}
    )
    role: str = Field(max_length=64, json_schema_extra={"enum": list(TENANT_ROLES)})


class PlatformAdminCreate(_In):
    email: Email = Field(max_length=320)
    # At least 10 characters: documented, checked by the service (400 WeakPassword).
    password: str = Field(
        max_length=1024, description="at least 10 characters", json_schema_extra={"minLength": 10}
    )
    role: str = Field(max_length=64, json_schema_extra={"enum": list(PLATFORM_ROLES)})


class AdminUpdate(_In):
    status: Literal["active", "disabled"]


class AdminOut(BaseModel):
    id: uuid.UUID
    email: str
    role: str
    tenant_id: uuid.UUID | None = None
    status: str = "active"
    created_at: datetime | None = None
    last_login_at: datetime | None = None


# -- users ---------------------------------------------------------------------------------


class UserImportEntry(_In):
    """One row, as documented; rows are checked one by one (admin.service.import_users)."""

    external_id: str
    email: str | None = None
    display_name: str | None = None
    plan: str | None = Field(
        default=None,
        description="A plan of the tenant: the user (new or existing) is put on it",
        json_schema_extra={"pattern": PLAN_NAME_PATTERN},
    )


class UserImportRequest(_In):
    # Any, not UserImportEntry: a wrongly typed row fails alone (in ``failed``), like a
    # bulk recharge's entries, instead of a 422 for the whole import.
    users: list[Any] = Field(json_schema_extra={"items": UserImportEntry.model_json_schema()})


class ImportFailureOut(BaseModel):
    index: int
    external_id: str | None = Field(description="As sent; null when it was not a string")
    code: str
    message: str


class UserImportResponse(BaseModel):
    created: int
    existing: int
    failed: list[ImportFailureOut]


class UserSummaryOut(BaseModel):
    """A user as a list shows it (what expires when is on the user's own view)."""

    external_id: str
    balance: int
    held: int
    available: int
    status: str
    created_at: datetime
    email: str | None = None
    display_name: str | None = None
    plan: str | None = Field(default=None, description="The user's plan (null: none)")


class UserOut(UserSummaryOut):
    expiring: list[ExpiringOut] = Field(
        default_factory=list, description="What expires when, as GET /balance shows it"
    )


class UserUpdate(_In):
    """Fields left out stay as they are; null clears one (``plan``: off every plan)."""

    model_config = ConfigDict(extra="forbid")

    plan: str | None = Field(
        default=None, max_length=64, json_schema_extra={"pattern": PLAN_NAME_PATTERN}
    )
    display_name: Text | None = Field(default=None, max_length=255)
    email: Email | None = Field(default=None, max_length=320)


class FreezeRequest(_In):
    reason: Text = Field(min_length=1, max_length=1000)


# -- plans ---------------------------------------------------------------------------------

MAX_DAILY_FREE_TOKENS = 10**9


class PlanIn(_In):
    """A plan, written whole: fields left out are null (no limit of the plan's own)."""

    model_config = ConfigDict(extra="forbid")

    daily_free_tokens: token_amount(0, MAX_DAILY_FREE_TOKENS) = Field(  # type: ignore[valid-type]
        description="What each user's daily grant is topped up to at every refill"
    )
    refill_time: str = Field(
        description="Local time of the daily refill, HH:MM (24 h)",
        json_schema_extra={"pattern": plan_schedule.REFILL_TIME_PATTERN, "example": "06:00"},
    )
    timezone: str = Field(
        description="IANA time zone of refill_time (Area/City), e.g. Asia/Seoul",
        json_schema_extra={"enum": sorted(plan_schedule.ZONES)},
    )
    rate_limit_per_second: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Swaps per second for the plan's users (an API key's own rate wins)",
    )
    max_concurrent_jobs: int | None = Field(
        default=None, ge=1, le=10_000, description="Swaps each user may have unfinished at once"
    )

    @field_validator("refill_time")
    @classmethod
    def _refill_time(cls, value: str) -> str:
        plan_schedule.parse_refill_time(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        plan_schedule.zone(value)
        return value


class PlanOut(BaseModel):
    name: str
    daily_free_tokens: int
    refill_time: str = Field(description="HH:MM, local to timezone")
    timezone: str
    rate_limit_per_second: int | None
    max_concurrent_jobs: int | None
    next_refill_at: datetime = Field(description="When the workers next run its refill")
    refilled_day: date | None = Field(description="The last local day its refill completed")
    created_at: datetime
    updated_at: datetime


class PlanList(BaseModel):
    items: list[PlanOut]


class RefillOut(BaseModel):
    """What an operator's refill did (each user is paid once a day, however often it runs)."""

    plan: str
    day: date = Field(description="The local day paid: the latest whose refill time has come")
    users_refilled: int
    tokens_granted: int
    tokens_expired: int = Field(description="What was left of earlier daily grants")


# -- API keys ------------------------------------------------------------------------------


class ApiKeyCreate(_In):
    name: Text = Field(min_length=1, max_length=255)
    rate_limit_per_second: int | None = Field(default=None, ge=1, le=100_000)


class ApiKeyCreated(BaseModel):
    id: uuid.UUID
    key: str = Field(description="shown only in this response; store it now")
    prefix: str
    name: str
    rate_limit_per_second: int | None = None
    created_at: datetime | None = None


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    prefix: str
    name: str
    rate_limit_per_second: int | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


# -- audit log -----------------------------------------------------------------------------


class AuditItem(BaseModel):
    id: int
    at: datetime
    actor: str
    actor_id: uuid.UUID | None
    actor_ip: str | None
    request_id: str | None
    action: str
    tenant_id: uuid.UUID | None
    target: str | None
    details: dict[str, Any]
    hash: str
    prev_hash: str


class AuditPage(BaseModel):
    items: list[AuditItem]
    next_cursor: str | None


# -- corrections ---------------------------------------------------------------------------

MAX_ADJUSTMENT = 10**12


def _signed_amount(value: Any) -> int:
    """An adjustment: a JSON integer, not 0, within the largest amount either way."""
    if type(value) is not int or value == 0 or abs(value) > MAX_ADJUSTMENT:
        raise PydanticCustomError(
            InvalidAmount.code,
            "must be a non-zero integer number of Tokens from -{high} to {high}",
            {"high": MAX_ADJUSTMENT},
        )
    return value


SignedAmount = Annotated[
    int,
    PlainValidator(_signed_amount),
    WithJsonSchema(
        {
            "type": "integer",
            "minimum": -MAX_ADJUSTMENT,
            "maximum": MAX_ADJUSTMENT,
            "not": {"const": 0},
        }
    ),
]
RefundAmount = token_amount(1, MAX_ADJUSTMENT)


class AdjustmentRequest(_In):
    amount: SignedAmount = Field(
        description="Signed Tokens: positive credits the user, negative debits them (not 0)"
    )
    reason: Text = Field(min_length=1, max_length=1000)


class RefundRequest(_In):
    reason: Text = Field(min_length=1, max_length=1000)
    amount: RefundAmount | None = Field(  # type: ignore[valid-type]
        default=None,
        description="Tokens to give back; default: all the job was charged and is not refunded yet",
    )


class EntryOut(BaseModel):
    """One ledger entry, signed from the user's side."""

    id: int
    at: datetime
    user: str | None = Field(description="The user's external id")
    kind: Literal["adjustment", "refund"]
    amount: int = Field(description="+ Tokens to the user, - Tokens taken from them")
    balance_after: int
    held_after: int
    reference: str | None = Field(description="A refund's hold (job:<job id>)")
    reason: str
    operator: str = Field(description="The admin who made it")
    job_id: uuid.UUID | None = None


# -- reports -------------------------------------------------------------------------------


class UserPage(BaseModel):
    items: list[UserSummaryOut]
    next_cursor: str | None


class UsageDayOut(BaseModel):
    day: date
    recharged: int
    granted: int
    consumed: int
    released: int
    refunded: int
    expired: int
    adjusted: int
    images_succeeded: int
    images_failed: int
    videos_succeeded: int
    videos_failed: int
    video_seconds: float
    active_users: int


class UsageReport(BaseModel):
    items: list[UsageDayOut]
