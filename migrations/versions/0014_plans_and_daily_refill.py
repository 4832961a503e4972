"""Plans per tenant, users on plans, and the daily refill's bookkeeping.

- ``plans``: a tenant's named plans (daily free Tokens, the local refill time and its
  IANA time zone, optional rate limit and concurrent-job cap). ``next_refill_at`` is when
  the workers' upkeep next runs the plan's refill (set to now when the plan is created,
  its schedule changes or a user joins it), ``refilled_day`` the last local day whose
  refill completed.
- ``users.plan_id``: the user's plan (null: none), indexed for the refill's walk.
- ``accounts.daily_refill_day``: the local day of the user's last daily grant. The refill
  advances it in the same UPDATE that credits the grant, only while it is before the day
  being paid: that conditional write is what makes the refill exactly once per user and
  day, whatever the number of workers or restarts.
- ``token_grants.plan_id``: marks a lot as a plan's daily grant (the next refill replaces
  it), with a partial index over the active ones.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("daily_free_tokens", sa.BigInteger, nullable=False),
        sa.Column("refill_time", sa.Time, nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("rate_limit_per_second", sa.Integer),
        sa.Column("max_concurrent_jobs", sa.Integer),
        sa.Column(
            "next_refill_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("refilled_day", sa.Date),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("tenant_id", "name", name="uq_plans_tenant_id_name"),
        sa.CheckConstraint("daily_free_tokens >= 0", name="ck_plans_daily_free_tokens"),
        sa.CheckConstraint(
            "rate_limit_per_second IS NULL OR rate_limit_per_second >= 1",
            name="ck_plans_rate_limit_positive",
        ),
        sa.CheckConstraint(
            "max_concurrent_jobs IS NULL OR max_concurrent_jobs >= 1",
            name="ck_plans_max_concurrent_jobs_positive",
        ),
    )
    op.create_index("ix_plans_next_refill_at", "plans", ["next_refill_at"])
    op.add_column("users", sa.Column("plan_id", sa.BigInteger, sa.ForeignKey("plans.id")))
    op.create_index(
        "ix_users_plan_id", "users", ["plan_id"], postgresql_where=sa.text("plan_id IS NOT NULL")
    )
    op.add_column("accounts", sa.Column("daily_refill_day", sa.Date))
    op.add_column("token_grants", sa.Column("plan_id", sa.BigInteger))
    op.create_index(
        "ix_token_grants_account_id_daily",
        "token_grants",
        ["account_id"],
        postgresql_where=sa.text("status = 'active' AND plan_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_token_grants_account_id_daily", table_name="token_grants")
    op.drop_column("token_grants", "plan_id")
    op.drop_column("accounts", "daily_refill_day")
    op.drop_index("ix_users_plan_id", table_name="users")
    op.drop_column("users", "plan_id")
    op.drop_index("ix_plans_next_refill_at", table_name="plans")
    op.drop_table("plans")
