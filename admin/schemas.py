"""Request and response bodies of the admin and sign-in APIs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- sign-in -------------------------------------------------------------------------------


class TokenRequest(_In):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


# -- tenants -------------------------------------------------------------------------------


class TenantCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(
        default=None, max_length=64, description="a-z, 0-9 and '-'; derived from name if absent"
    )


class TenantUpdate(_In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    approval_threshold: int | None = Field(
        default=None,
        ge=1,
        le=10**12,
        description="Bulk recharges above this total wait for a second admin; null turns it off",
    )
    status: Literal["active", "suspended"] | None = Field(
        default=None, description="platform admins only"
    )


class TenantOut(BaseModel):
    id: uuid.UUID
    name: str
    slug: str
    status: str
    approval_threshold: int | None = None
    created_at: datetime | None = None


class TenantPage(BaseModel):
    items: list[TenantOut]
    next_cursor: str | None


# -- admins --------------------------------------------------------------------------------


class TenantAdminCreate(_In):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024, description="at least 10 characters")
    role: Literal["tenant_admin", "auditor"]


class PlatformAdminCreate(_In):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024, description="at least 10 characters")
    role: Literal["platform_admin", "auditor"]


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
    external_id: str
    email: str | None = None
    display_name: str | None = None


class UserImportRequest(_In):
    users: list[UserImportEntry]


class ImportFailureOut(BaseModel):
    index: int
    external_id: str
    code: str
    message: str


class UserImportResponse(BaseModel):
    created: int
    existing: int
    failed: list[ImportFailureOut]


class UserOut(BaseModel):
    external_id: str
    balance: int
    held: int
    available: int
    status: str
    created_at: datetime
    email: str | None = None
    display_name: str | None = None


class FreezeRequest(_In):
    reason: str = Field(min_length=1, max_length=1000)


# -- API keys ------------------------------------------------------------------------------


class ApiKeyCreate(_In):
    name: str = Field(min_length=1, max_length=255)
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
