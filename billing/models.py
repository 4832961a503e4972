"""ORM rows for Token accounts, the ledger, holds, expiring grants, bulk-recharge batches and
the daily usage rollups.

The SQL that moves money lives in ``billing/repository.py``; these classes describe the
tables (for Alembic, reads and tests). Ledger rows are never updated: the database refuses it.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base

ENTRY_KINDS = ("recharge", "grant", "expire", "hold", "capture", "release", "refund", "adjustment")


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
        # One issuance and one revenue account per tenant (migration 0001).
        Index(
            "uq_accounts_tenant_system_kind",
            "tenant_id",
            "kind",
            unique=True,
            postgresql_where=text("kind <> 'user'"),
        ),
        # Room on each page for new row versions: bulk updates stay HOT (migration 0003).
        {"postgresql_with": {"fillfactor": 50}},
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
    # The local day of the user's last daily grant (migration 0014, billing/daily_refill.py).
    daily_refill_day: Mapped[date | None] = mapped_column(Date)


class LedgerEntry(Base):
    """One immutable Token movement from one account to another (see billing/service.py)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in ENTRY_KINDS) + ")", name="kind_known"
        ),
        CheckConstraint(
            "(kind IN ('hold', 'release')) = (from_account_id = to_account_id)",
            name="memo_entries_stay_on_one_account",
        ),
        CheckConstraint(
            "kind NOT IN ('hold', 'capture', 'release') OR hold_id IS NOT NULL",
            name="hold_entries_name_their_hold",
        ),
        Index("ix_ledger_entries_to_account_id_id", "to_account_id", "id"),
        Index("ix_ledger_entries_from_account_id_id", "from_account_id", "id"),
        # The ledger export's walk (migration 0012).
        Index("ix_ledger_entries_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        Index(
            "uq_ledger_entries_tenant_kind_idempotency_key",
            "tenant_id",
            "kind",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    # No FOREIGN KEYs on purpose (migration 0003): verify checks every reference instead.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    from_account_id: Mapped[int] = mapped_column(BigInteger)
    to_account_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str | None] = mapped_column(String(255))
    operator: Mapped[str | None] = mapped_column(String(320))
    reason: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    hold_id: Mapped[int | None] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    held_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Hold(Base):
    """Tokens reserved for one reference (a job id) until captured or released."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('held', 'captured', 'released')", name="status_known"),
        CheckConstraint(
            "(status = 'held' AND captured = 0 AND released = 0)"
            " OR (status <> 'held' AND captured >= 0 AND released >= 0"
            " AND captured + released = amount)",
            name="settlement_adds_up",
        ),
        CheckConstraint("refunded >= 0 AND refunded <= captured", name="refund_within_capture"),
        CheckConstraint("multiplier >= 1 AND multiplier <= 10", name="multiplier_in_range"),
        UniqueConstraint("tenant_id", "reference"),
        Index("ix_holds_account_id_open", "account_id", postgresql_where=text("status = 'held'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    reference: Mapped[str] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger)
    captured: Mapped[int] = mapped_column(BigInteger, server_default="0")
    released: Mapped[int] = mapped_column(BigInteger, server_default="0")
    refunded: Mapped[int] = mapped_column(BigInteger, server_default="0")
    status: Mapped[str] = mapped_column(String(16), server_default="held")
    price_version: Mapped[int | None] = mapped_column(BigInteger)
    # The peak multiplier the amount was held at (1: none; migration 0016).
    multiplier: Mapped[Decimal] = mapped_column(Numeric(4, 2), server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TokenGrant(Base):
    """Granted tokens that expire; ``remaining`` is the part not spent yet."""

    __tablename__ = "token_grants"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_in_range"),
        CheckConstraint("status IN ('active', 'expired')", name="status_known"),
        Index(
            "ix_token_grants_account_id_unspent",
            "account_id",
            "expires_at",
            "id",
            postgresql_where=text("status = 'active' AND remaining > 0"),
        ),
        Index(
            "ix_token_grants_expires_at_active",
            "expires_at",
            postgresql_where=text("status = 'active'"),
        ),
        Index(
            "ix_token_grants_account_id_daily",
            "account_id",
            postgresql_where=text("status = 'active' AND plan_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    expired_amount: Mapped[int] = mapped_column(BigInteger, server_default="0")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    label: Mapped[str | None] = mapped_column(String(100))  # the campaign (migration 0011)
    plan_id: Mapped[int | None] = mapped_column(BigInteger)  # a plan's daily grant (0014)
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RechargeBatch(Base):
    """One bulk recharge call and its report; pending ones keep their validated entries."""

    __tablename__ = "recharge_batches"
    __table_args__ = (
        CheckConstraint(
            "status IN ('processing', 'applied', 'pending_approval', 'rejected')",
            name="status_known",
        ),
        CheckConstraint("mode IN ('soft', 'atomic')", name="mode_known"),
        UniqueConstraint("tenant_id", "idempotency_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    status: Mapped[str] = mapped_column(String(24))
    mode: Mapped[str] = mapped_column(String(16))
    requested: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    total_amount: Mapped[int] = mapped_column(BigInteger, server_default="0")
    failed_users: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    reason: Mapped[str | None] = mapped_column(Text)
    operator: Mapped[str | None] = mapped_column(String(320))
    # A batch's Idempotency-Key is in idempotency_keys since migration 0009; these two (and
    # their unique constraint) are written only by images from before it, still running.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))  # of the body, with the key
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_by_email: Mapped[str | None] = mapped_column(String(320))
    approved_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    approved_by_email: Mapped[str | None] = mapped_column(String(320))
    pending_users: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    pending_amounts: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    # A batch of grants (migration 0011): its entries expire at expires_at.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# -- daily usage rollups (migration 0012; written by triggers, read by billing/usage.py) --


class UsageDelta(Base):
    """What one statement added to a tenant's day for one metric, not folded yet."""

    __tablename__ = "usage_deltas"
    __table_args__ = (Index("ix_usage_deltas_tenant_id_day", "tenant_id", "day"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    day: Mapped[date] = mapped_column(Date)
    metric: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    seconds: Mapped[Decimal] = mapped_column(Numeric, server_default="0")


class UsageDaily(Base):
    """A tenant's day for one metric (``ledger:<kind>``, ``job:<kind>:<status>``,
    ``active_users``), as folded so far."""

    __tablename__ = "usage_daily"

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    metric: Mapped[str] = mapped_column(Text, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    seconds: Mapped[Decimal] = mapped_column(Numeric, server_default="0")


class UsageActiveUser(Base):
    """A user (by account) who held Tokens for a swap on that UTC day."""

    __tablename__ = "usage_active_users"

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class UsageLastActive(Base):
    """A user's (by account) last UTC day with a swap: "active since" is an index range."""

    __tablename__ = "usage_last_active"
    __table_args__ = (Index("ix_usage_last_active_tenant_id_day", "tenant_id", "day"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    day: Mapped[date] = mapped_column(Date)
