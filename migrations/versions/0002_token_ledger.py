"""Token ledger: immutable double-entry rows, holds, expiring grants, bulk-recharge batches.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NOW = sa.text("now()")
ENTRY_KINDS = ("recharge", "grant", "expiry", "hold", "capture", "release", "refund", "adjustment")


def _kinds(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def upgrade() -> None:
    op.create_table(
        "recharge_batches",
        sa.Column(
            "id",
            pg.UUID(as_uuid=True),
            primary_key=True,
            server_default=sa.text("gen_random_uuid()"),
        ),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("requested", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("total_amount", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("failed_users", pg.JSONB(), nullable=False, server_default="[]"),
        sa.Column("reason", sa.Text()),
        sa.Column("operator", sa.String(320)),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("created_by", pg.UUID(as_uuid=True)),
        sa.Column("created_by_email", sa.String(320)),
        sa.Column("approved_by", pg.UUID(as_uuid=True)),
        sa.Column("approved_by_email", sa.String(320)),
        # Entries that passed validation, kept while the batch waits for approval.
        sa.Column("pending_users", pg.ARRAY(sa.Text())),
        sa.Column("pending_amounts", pg.ARRAY(sa.BigInteger())),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("approved_at", sa.DateTime(timezone=True)),
        sa.Column("applied_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "status IN ('processing', 'applied', 'pending_approval', 'rejected')",
            name="status_known",
        ),
        sa.CheckConstraint("mode IN ('soft', 'atomic')", name="mode_known"),
        # Second line of defence behind the HTTP idempotency layer.
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
    )
    op.create_index(op.f("ix_recharge_batches_tenant_id"), "recharge_batches", ["tenant_id"])

    op.create_table(
        "holds",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("reference", sa.String(255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("captured", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("released", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("refunded", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False, server_default="held"),
        sa.Column("price_version", sa.BigInteger()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("settled_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint("status IN ('held', 'captured', 'released')", name="status_known"),
        sa.CheckConstraint(
            "(status = 'held' AND captured = 0 AND released = 0)"
            " OR (status <> 'held' AND captured >= 0 AND released >= 0"
            " AND captured + released = amount)",
            name="settlement_adds_up",
        ),
        sa.CheckConstraint("refunded >= 0 AND refunded <= captured", name="refund_within_capture"),
        sa.UniqueConstraint("tenant_id", "reference"),
    )
    op.create_index(
        "ix_holds_account_id_open",
        "holds",
        ["account_id"],
        postgresql_where=sa.text("status = 'held'"),
    )

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("from_account_id", sa.BigInteger(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("to_account_id", sa.BigInteger(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(255)),
        sa.Column("operator", sa.String(320)),
        sa.Column("reason", sa.Text()),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("batch_id", pg.UUID(as_uuid=True), sa.ForeignKey("recharge_batches.id")),
        sa.Column("hold_id", sa.BigInteger(), sa.ForeignKey("holds.id")),
        # The user-side account's balance and held right after this entry.
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("held_after", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint(f"kind IN ({_kinds(ENTRY_KINDS)})", name="kind_known"),
        # Holds and releases are memo entries on the user account (from = to); every other
        # kind moves tokens between two different accounts.
        sa.CheckConstraint(
            "(kind IN ('hold', 'release')) = (from_account_id = to_account_id)",
            name="memo_entries_stay_on_one_account",
        ),
        sa.CheckConstraint(
            "kind NOT IN ('hold', 'capture', 'release') OR hold_id IS NOT NULL",
            name="hold_entries_name_their_hold",
        ),
    )
    op.create_index("ix_ledger_entries_to_account_id_id", "ledger_entries", ["to_account_id", "id"])
    op.create_index(
        "ix_ledger_entries_from_account_id_id", "ledger_entries", ["from_account_id", "id"]
    )
    op.create_index(op.f("ix_ledger_entries_tenant_id"), "ledger_entries", ["tenant_id"])
    op.create_index(
        "uq_ledger_entries_tenant_kind_idempotency_key",
        "ledger_entries",
        ["tenant_id", "kind", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    # Corrections are new entries: the database itself refuses edits and deletions.
    op.execute(
        "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries "
        "FOR EACH ROW EXECUTE FUNCTION swapmeter_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries "
        "FOR EACH STATEMENT EXECUTE FUNCTION swapmeter_refuse_change()"
    )

    op.create_table(
        "token_grants",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), sa.ForeignKey("ledger_entries.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("expired_amount", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_in_range"),
        sa.CheckConstraint("status IN ('active', 'expired')", name="status_known"),
    )
    op.create_index(
        "ix_token_grants_account_id_unspent",
        "token_grants",
        ["account_id", "expires_at", "id"],
        postgresql_where=sa.text("status = 'active' AND remaining > 0"),
    )
    op.create_index(
        "ix_token_grants_expires_at_active",
        "token_grants",
        ["expires_at"],
        postgresql_where=sa.text("status = 'active'"),
    )


def downgrade() -> None:
    op.drop_table("token_grants")
    op.execute("DROP TABLE ledger_entries")
    op.drop_table("holds")
    op.drop_table("recharge_batches")
