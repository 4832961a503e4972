"""Jobs by tenant and time: ``ix_jobs_tenant_id_created_at`` (tenant_id, created_at, id).

The operators' overview counts a tenant's jobs per hour and their run times over a recent
range (app/jobs/stats.py); without it, such a range reads every job of the tenant (the
only tenant index was ``ix_jobs_tenant_id``). Built with a plain CREATE INDEX: writes to
``jobs`` wait while it builds (seconds for a million jobs).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_tenant_id_created_at", "jobs", ["tenant_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_id_created_at", table_name="jobs")
