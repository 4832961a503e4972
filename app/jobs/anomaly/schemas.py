"""Request and response bodies of the anomaly rules and their review queue."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from app.core.fields import Text, token_amount

RuleName = Literal["requests_per_minute", "same_source_per_hour", "tokens_per_day"]


class RulesIn(BaseModel):
    """The tenant's rules as a whole (PUT): a limit left out or null is off."""

    model_config = ConfigDict(extra="forbid")

    max_requests_per_minute: StrictInt | None = Field(
        default=None, ge=1, le=1_000_000, description="swaps per user in any 60 s"
    )
    max_same_source_per_hour: StrictInt | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="swaps per user with the same source face in any hour (re-encoded or "
        "resized copies of one picture count as the same)",
    )
    max_tokens_per_day: token_amount(1, 10**12) | None = Field(  # type: ignore[valid-type]
        default=None, description="Tokens a user's swaps may ask for per UTC day"
    )
    action: Literal["freeze", "flag"] = Field(
        description="freeze: the user is frozen and the breaching swap refused (403 "
        "AccountFrozen, nothing held); flag: the swap goes through, a flag is recorded"
    )


class RulesOut(BaseModel):
    tenant_id: uuid.UUID
    max_requests_per_minute: int | None = None
    max_same_source_per_hour: int | None = None
    max_tokens_per_day: int | None = None
    action: Literal["freeze", "flag"] | None = Field(
        default=None, description="null while the tenant has never set rules"
    )
    version: int = Field(default=0, description="rises with every change; 0: never set")
    updated_at: datetime | None = None


class FlagOut(BaseModel):
    id: int
    user: str = Field(description="the user's external_id")
    rule: RuleName
    observed: int
    limit: int
    at: datetime
    status: Literal["open", "resolved"]
    action: Literal["freeze", "flag"] = Field(description="what the breach did")
    evidence: dict[str, Any] = Field(
        description="rule, observed, limit, window_seconds, request_id, tokens; for the "
        "same-source rule the source's perceptual hash (16 hex digits)"
    )
    resolution: Literal["unfreeze", "keep_frozen"] | None = None
    note: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None


class FlagPage(BaseModel):
    items: list[FlagOut]
    next_cursor: str | None


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["unfreeze", "keep_frozen"] = Field(
        description="unfreeze: the user is active again, this and their other open flags "
        "close, their windows start afresh; keep_frozen: the user stays (or becomes) frozen "
        "and this flag closes"
    )
    note: Text = Field(default="", max_length=2000)


def flag_out(row: Any) -> FlagOut:
    return FlagOut(
        id=row.id,
        user=row.external_id,
        rule=row.rule,
        observed=row.observed,
        limit=row.limit,
        at=row.created_at,
        status=row.status,
        action=row.action,
        evidence=row.evidence,
        resolution=row.resolution,
        note=row.note,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
    )
