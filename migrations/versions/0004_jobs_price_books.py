"""Metered swap jobs: price books, the jobs queue, webhook deliveries, worker heartbeats.

- price_books: one append-only row per change of a tenant's prices (version 1, 2, ...).
- jobs: the queue itself. Workers claim with FOR UPDATE SKIP LOCKED over a partial index
  that holds only queued and processing rows, so finished jobs cost the claim nothing.
- webhook_deliveries: one row per job that has a webhook_url, written in the finishing
  transaction (an outbox): a delivery survives the worker that should have sent it.
- workers: heartbeats, for swapmeter_workers_live and operators.
- tenant_webhook_secrets: the per-tenant HMAC key of webhook signatures.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "price_books",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("image", sa.BigInteger(), nullable=False),
        sa.Column("video_second", sa.BigInteger(), nullable=False),
        sa.Column("enhance_surcharge", sa.BigInteger(), nullable=False),
        sa.Column("enhance_video_second_surcharge", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("created_by", pg.UUID(as_uuid=True)),
        sa.Column("created_by_email", sa.String(320)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.UniqueConstraint("tenant_id", "version"),
        sa.CheckConstraint("version >= 1", name="version_positive"),
        sa.CheckConstraint("image >= 1 AND video_second >= 1", name="units_cost_something"),
        sa.CheckConstraint(
            "enhance_surcharge >= 0 AND enhance_video_second_surcharge >= 0",
            name="surcharges_not_negative",
        ),
    )
    # Prices are money: a change is a new version, never an edit (function from 0001).
    op.execute(
        "CREATE TRIGGER price_books_append_only BEFORE UPDATE OR DELETE ON price_books "
        "FOR EACH ROW EXECUTE FUNCTION swapmeter_refuse_change()"
    )

    op.create_table(
        "jobs",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("api_key_id", pg.UUID(as_uuid=True)),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("progress", sa.Float(), nullable=False, server_default="0"),
        sa.Column("params", pg.JSONB(), nullable=False, server_default="{}"),
        sa.Column("source_key", sa.Text(), nullable=False),
        sa.Column("target_key", sa.Text(), nullable=False),
        sa.Column("target_seconds", sa.Float()),
        sa.Column("metered", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("hold_reference", sa.String(255)),
        sa.Column("price_version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("unit_price", sa.BigInteger(), nullable=False),
        sa.Column("tokens_held", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("tokens_charged", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("seconds_done", sa.Float()),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("result", pg.JSONB()),
        sa.Column("result_key", sa.Text()),
        sa.Column("webhook_url", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="3"),
        sa.Column("worker_id", sa.String(128)),
        sa.Column("leased_until", sa.DateTime(timezone=True)),
        sa.Column("run_after", sa.DateTime(timezone=True)),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("kind IN ('image', 'video')", name="kind_known"),
        sa.CheckConstraint(
            "status IN ('queued', 'processing', 'succeeded', 'failed', 'canceled')",
            name="status_known",
        ),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name="progress_in_range"),
        sa.CheckConstraint(
            "tokens_charged >= 0 AND tokens_charged <= tokens_held", name="charge_within_hold"
        ),
        sa.CheckConstraint("NOT metered OR hold_reference IS NOT NULL", name="metered_jobs_hold"),
    )
    # The queue: only open jobs, oldest first. Claims, lease expiry and the queue gauge
    # all read this small index, however many finished jobs the table keeps.
    op.create_index(
        "ix_jobs_open",
        "jobs",
        ["created_at", "id"],
        postgresql_where=sa.text("status IN ('queued', 'processing')"),
    )
    op.create_index("ix_jobs_user_id_created_at", "jobs", ["user_id", "created_at", "id"])
    op.create_index("ix_jobs_tenant_id", "jobs", ["tenant_id"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("job_id", pg.UUID(as_uuid=True), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_status_code", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("delivery_id", pg.UUID(as_uuid=True)),
        sa.Column("log", pg.JSONB(), nullable=False, server_default="[]"),
        # Who may send it until when: the finishing worker first, then the sweeper.
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
    )
    op.create_index("ix_webhook_deliveries_job_id", "webhook_deliveries", ["job_id"])
    op.create_index(
        "ix_webhook_deliveries_pending",
        "webhook_deliveries",
        ["lease_until"],
        postgresql_where=sa.text("status = 'pending'"),
    )

    op.create_table(
        "workers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )

    op.create_table(
        "tenant_webhook_secrets",
        sa.Column(
            "tenant_id", pg.UUID(as_uuid=True), sa.ForeignKey("tenants.id"), primary_key=True
        ),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("rotated_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("tenant_webhook_secrets")
    op.drop_table("workers")
    op.drop_table("webhook_deliveries")
    op.drop_table("jobs")
    op.execute("DROP TABLE price_books")
