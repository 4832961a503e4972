"""ORM rows of the anomaly rules (migration 0015): for Alembic, reads and tests. Every
statement lives in ``app/jobs/anomaly/repository.py``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base


class AnomalyRules(Base):
    """A tenant's limits; null: that rule is off. ``version`` rises with every change."""

    __tablename__ = "anomaly_rules"
    __table_args__ = (
        CheckConstraint("action IN ('freeze', 'flag')", name="action_known"),
        CheckConstraint(
            "coalesce(max_requests_per_minute, 1) > 0 AND coalesce(max_same_source_per_hour, 1) > 0"
            " AND coalesce(max_tokens_per_day, 1) > 0",
            name="limits_positive",
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    max_requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    max_same_source_per_hour: Mapped[int | None] = mapped_column(Integer)
    max_tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(BigInteger, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AnomalyFlag(Base):
    """One breach of a rule by a user, with its evidence, open until an admin resolves it."""

    __tablename__ = "anomaly_flags"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'resolved')", name="status_known"),
        CheckConstraint(
            "resolution IS NULL OR resolution IN ('unfreeze', 'keep_frozen')",
            name="resolution_known",
        ),
        # One open flag per user and rule: a user who keeps breaking it is one review item.
        Index(
            "ux_anomaly_flags_open_user_rule",
            "user_id",
            "rule",
            unique=True,
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_anomaly_flags_tenant_id_id", "tenant_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    rule: Mapped[str] = mapped_column(String(32))
    observed: Mapped[int] = mapped_column(BigInteger)
    limit: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(16))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    status: Mapped[str] = mapped_column(String(16), server_default="open")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    resolution: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(Text)
