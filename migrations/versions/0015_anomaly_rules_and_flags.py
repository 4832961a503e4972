"""Anomaly rules: a tenant's limits, the flags their breaches raise, a tenant webhook URL.

- ``anomaly_rules``: one row per tenant (requests per minute, the same source face per
  hour, Tokens per day, and what a breach does: ``freeze`` or ``flag``), with a
  ``version`` raised on every change: the swap path reads the rules from Redis, where the
  newest version wins (``app/jobs/anomaly``).
- ``anomaly_flags``: one row per breach with its evidence, ``open`` until an admin
  resolves it (``unfreeze`` or ``keep_frozen``). At most one open flag per user and rule
  (a partial unique index), so a user who keeps breaking a rule is one review item.
- ``tenants.webhook_url``: where a tenant's account events (a breach) are POSTed, signed
  with the tenant's webhook secret; null: none.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("webhook_url", sa.Text()))
    op.create_table(
        "anomaly_rules",
        sa.Column("tenant_id", UUID(as_uuid=True), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("max_requests_per_minute", sa.Integer()),
        sa.Column("max_same_source_per_hour", sa.Integer()),
        sa.Column("max_tokens_per_day", sa.BigInteger()),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="1"),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("action IN ('freeze', 'flag')", name="action_known"),
        sa.CheckConstraint(
            "coalesce(max_requests_per_minute, 1) > 0 AND coalesce(max_same_source_per_hour, 1) > 0"
            " AND coalesce(max_tokens_per_day, 1) > 0",
            name="limits_positive",
        ),
    )
    op.create_table(
        "anomaly_flags",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("observed", sa.BigInteger(), nullable=False),
        sa.Column("limit", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("evidence", JSONB(), nullable=False, server_default="{}"),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("resolution", sa.String(16)),
        sa.Column("note", sa.Text()),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_by", sa.Text()),
        sa.CheckConstraint("status IN ('open', 'resolved')", name="status_known"),
        sa.CheckConstraint(
            "resolution IS NULL OR resolution IN ('unfreeze', 'keep_frozen')",
            name="resolution_known",
        ),
    )
    op.create_index(
        "ux_anomaly_flags_open_user_rule",
        "anomaly_flags",
        ["user_id", "rule"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_index("ix_anomaly_flags_tenant_id_id", "anomaly_flags", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_anomaly_flags_tenant_id_id", table_name="anomaly_flags")
    op.drop_index("ux_anomaly_flags_open_user_rule", table_name="anomaly_flags")
    op.drop_table("anomaly_flags")
    op.drop_table("anomaly_rules")
    op.drop_column("tenants", "webhook_url")
