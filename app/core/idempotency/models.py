"""The stored first response for each (scope, Idempotency-Key)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Index, Integer, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # What the purge walks: the keys that expire (migration 0009).
        Index(
            "ix_idempotency_keys_created_at",
            "created_at",
            postgresql_where=text("NOT permanent"),
        ),
    )

    # scope: "user:<id>" for API-key callers, "tenant:<id>" for admins.
    scope: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    method_path: Mapped[str] = mapped_column(String(512))
    # None only for a bulk recharge's key from before its body was fingerprinted (0006, 0009).
    request_hash: Mapped[str | None] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[Any | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # When the first request's answer went out, for a key stored before that (a swap's,
    # with its 202, when its job is created): see migration 0008.
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Never purged: a bulk recharge's key is honoured for good (migration 0009).
    permanent: Mapped[bool] = mapped_column(Boolean, server_default="false")
