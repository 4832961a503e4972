"""ORM rows for tenants, their plans, end users and API keys."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy import Time as SqlTime
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()
    )
    name: Mapped[str] = mapped_column(Text)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    # Bulk recharges whose total exceeds this wait for a second admin. NULL: off.
    approval_threshold: Mapped[int | None] = mapped_column(BigInteger)
    # Where the tenant's account events (an anomaly rule broken) are POSTed. NULL: none.
    webhook_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Plan(Base):
    """A tenant's plan: the daily free Tokens its users get at ``refill_time`` local to
    ``timezone`` (billing/daily_refill.py), and optional limits on the swap path."""

    __tablename__ = "plans"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_plans_tenant_id_name"),
        CheckConstraint("daily_free_tokens >= 0", name="ck_plans_daily_free_tokens"),
        CheckConstraint(
            "rate_limit_per_second IS NULL OR rate_limit_per_second >= 1",
            name="ck_plans_rate_limit_positive",
        ),
        CheckConstraint(
            "max_concurrent_jobs IS NULL OR max_concurrent_jobs >= 1",
            name="ck_plans_max_concurrent_jobs_positive",
        ),
        Index("ix_plans_next_refill_at", "next_refill_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(64))
    daily_free_tokens: Mapped[int] = mapped_column(BigInteger)
    refill_time: Mapped[time] = mapped_column(SqlTime)
    timezone: Mapped[str] = mapped_column(String(64))
    rate_limit_per_second: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer)
    # When the upkeep next runs the refill; the last local day whose refill completed.
    next_refill_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    refilled_day: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class User(Base):
    """An end user of a tenant, known to the tenant by ``external_id``."""

    __tablename__ = "users"
    __table_args__ = (
        # The admin user list: prefix search in byte order, and by creation (migration 0012).
        Index("ix_users_tenant_id_external_id_c", "tenant_id", text('external_id COLLATE "C"')),
        Index("ix_users_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        Index("ix_users_plan_id", "plan_id", postgresql_where=text("plan_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(255))
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"))  # migration 0014
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiKey(Base):
    """``sm_<prefix>_<secret>``: found by prefix, secret stored only as SHA-256."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    rate_limit_per_second: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
