"""Tenants, end users, Token accounts, API keys, admins, audit log, idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NOW = sa.text("now()")


def _uuid_pk() -> sa.Column:
    return sa.Column(
        "id", pg.UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")
    )


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=None if nullable else NOW,
    )


def upgrade() -> None:
    op.create_table(
        "tenants",
        _uuid_pk(),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("approval_threshold", sa.BigInteger()),
        _ts("created_at"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("display_name", sa.String(255)),
        _ts("created_at"),
        sa.UniqueConstraint("tenant_id", "external_id"),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey("users.id"), unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("held", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("frozen_reason", sa.Text()),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint("kind IN ('user', 'issuance', 'revenue')", name="kind_known"),
        sa.CheckConstraint("kind <> 'user' OR balance >= 0", name="user_balance_not_negative"),
        sa.CheckConstraint(
            "held >= 0 AND (kind <> 'user' OR held <= balance)", name="held_in_range"
        ),
        sa.CheckConstraint(
            "(kind = 'user') = (user_id IS NOT NULL)", name="user_accounts_have_user"
        ),
        sa.CheckConstraint("status IN ('active', 'frozen')", name="status_known"),
    )
    op.create_index(op.f("ix_accounts_tenant_id"), "accounts", ["tenant_id"])
    # One issuance and one revenue account per tenant.
    op.create_index(
        "uq_accounts_tenant_system_kind",
        "accounts",
        ["tenant_id", "kind"],
        unique=True,
        postgresql_where=sa.text("kind <> 'user'"),
    )

    op.create_table(
        "api_keys",
        _uuid_pk(),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False, unique=True),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("rate_limit_per_second", sa.Integer()),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
        _ts("last_used_at", nullable=True),
    )
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"])
    op.create_index(op.f("ix_api_keys_user_id"), "api_keys", ["user_id"])

    op.create_table(
        "admins",
        _uuid_pk(),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), sa.ForeignKey("tenants.id")),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        _ts("created_at"),
        _ts("last_login_at", nullable=True),
        sa.CheckConstraint(
            "role IN ('platform_admin', 'tenant_admin', 'auditor')", name="role_known"
        ),
        sa.CheckConstraint(
            "role <> 'tenant_admin' OR tenant_id IS NOT NULL", name="tenant_admin_has_tenant"
        ),
        sa.CheckConstraint(
            "role <> 'platform_admin' OR tenant_id IS NULL", name="platform_admin_has_no_tenant"
        ),
    )
    op.create_index(op.f("ix_admins_tenant_id"), "admins", ["tenant_id"])
    op.create_index("uq_admins_lower_email", "admins", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        _ts("at"),
        sa.Column("actor_id", pg.UUID(as_uuid=True)),
        sa.Column("actor", sa.String(320), nullable=False),
        sa.Column("actor_ip", sa.String(64)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("tenant_id", pg.UUID(as_uuid=True)),
        sa.Column("target", sa.Text()),
        sa.Column("details", pg.JSONB(), nullable=False, server_default="{}"),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_index(op.f("ix_audit_log_action"), "audit_log", ["action"])
    op.create_index(op.f("ix_audit_log_tenant_id"), "audit_log", ["tenant_id"])
    # The audit log is append-only: the database itself refuses edits and deletions.
    op.execute(
        """
        CREATE FUNCTION swapmeter_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION swapmeter_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION swapmeter_refuse_change()"
    )

    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("method_path", sa.String(512), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("response_status", sa.Integer()),
        sa.Column("response_body", pg.JSONB()),
        _ts("created_at"),
    )
    op.create_index(op.f("ix_idempotency_keys_created_at"), "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.execute("DROP TABLE audit_log")
    op.execute("DROP FUNCTION swapmeter_refuse_change()")
    op.drop_table("admins")
    op.drop_table("api_keys")
    op.drop_table("accounts")
    op.drop_table("users")
    op.drop_table("tenants")
