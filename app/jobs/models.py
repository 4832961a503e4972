"""ORM rows of the jobs domain: the queue and the workers.

The statements live in the jobs modules; these classes describe the tables (migration
0004) for Alembic, reads and tests.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base

JOB_STATUSES = ("queued", "processing", "succeeded", "failed", "canceled")
OPEN_STATUSES = ("queued", "processing")
FINAL_STATUSES = ("succeeded", "failed", "canceled")


class Job(Base):
    """One swap: its inputs (keys in the result store), price, hold, lease and outcome."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("kind IN ('image', 'video')", name="kind_known"),
        CheckConstraint(
            "status IN ('queued', 'processing', 'succeeded', 'failed', 'canceled')",
            name="status_known",
        ),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress_in_range"),
        CheckConstraint(
            "tokens_charged >= 0 AND tokens_charged <= tokens_held", name="charge_within_hold"
        ),
        CheckConstraint("NOT metered OR hold_reference IS NOT NULL", name="metered_jobs_hold"),
        CheckConstraint("multiplier >= 1 AND multiplier <= 10", name="multiplier_in_range"),
        Index(
            "ix_jobs_open",
            "created_at",
            "id",
            postgresql_where=text("status IN ('queued', 'processing')"),
        ),
        Index("ix_jobs_user_id_created_at", "user_id", "created_at", "id"),
        Index("ix_jobs_tenant_id_created_at", "tenant_id", "created_at", "id"),  # 0017
        # The dashboard's list of one status of a tenant's jobs (migration 0018).
        Index("ix_jobs_tenant_id_status_created_at", "tenant_id", "status", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), server_default="queued")
    progress: Mapped[float] = mapped_column(Float, server_default="0")
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    source_key: Mapped[str] = mapped_column(Text)
    target_key: Mapped[str] = mapped_column(Text)
    target_seconds: Mapped[float | None] = mapped_column(Float)
    metered: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    hold_reference: Mapped[str | None] = mapped_column(String(255))
    price_version: Mapped[int] = mapped_column(Integer, server_default="0")
    unit_price: Mapped[int] = mapped_column(BigInteger)
    # The peak multiplier its Tokens were held at (1: none; migration 0016).
    multiplier: Mapped[Decimal] = mapped_column(Numeric(4, 2), server_default="1")
    tokens_held: Mapped[int] = mapped_column(BigInteger, server_default="0")
    tokens_charged: Mapped[int] = mapped_column(BigInteger, server_default="0")
    seconds_done: Mapped[float | None] = mapped_column(Float)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    result_key: Mapped[str | None] = mapped_column(Text)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="3")
    worker_id: Mapped[str | None] = mapped_column(String(128))
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    run_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WorkerHeartbeat(Base):
    """A worker process that said it was alive at ``last_seen_at``."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(Text)
    pid: Mapped[int] = mapped_column(Integer)
    concurrency: Mapped[int] = mapped_column(Integer)
    running: Mapped[int] = mapped_column(Integer, server_default="0")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
