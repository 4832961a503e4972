"""ORM rows for Token accounts and the ledger."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class Account(Base):
    """A Token account: one per end user, plus per-tenant system accounts.

    ``available = balance - held``. System accounts (``issuance``, ``revenue``) may go
    negative so that all accounts of a tenant sum to zero; user accounts may not.
    """

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("kind IN ('user', 'issuance', 'revenue')", name="kind_known"),
        CheckConstraint("kind <> 'user' OR balance >= 0", name="user_balance_not_negative"),
        CheckConstraint("held >= 0 AND (kind <> 'user' OR held <= balance)", name="held_in_range"),
        CheckConstraint("(kind = 'user') = (user_id IS NOT NULL)", name="user_accounts_have_user"),
        CheckConstraint("status IN ('active', 'frozen')", name="status_known"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    balance: Mapped[int] = mapped_column(BigInteger, server_default="0")
    held: Mapped[int] = mapped_column(BigInteger, server_default="0")
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    frozen_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
