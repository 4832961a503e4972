"""The indexes of the dashboard's lists: a tenant's jobs and a tenant's audit records.

- ``jobs (tenant_id, status, created_at, id)``: a tenant's jobs of one status newest
  first, keyset-paginated (``app.jobs.repository.list_tenant_jobs``), a range scan even
  when that status is rare (the failed jobs of a tenant with a million succeeded ones).
  Without a status the list reads ``(tenant_id, created_at, id)`` (revision 0017), which
  makes ``ix_jobs_tenant_id``, its prefix, redundant: it goes, so a job's writes keep
  the same number of indexes.
- ``audit_log (tenant_id, id)``: a tenant's audit records newest first
  (``admin.repository.list_audit_records``); it replaces ``ix_audit_log_tenant_id``.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-09
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_tenant_id_status_created_at", "jobs", ["tenant_id", "status", "created_at", "id"]
    )
    op.drop_index("ix_jobs_tenant_id", table_name="jobs")
    op.create_index("ix_audit_log_tenant_id_id", "audit_log", ["tenant_id", "id"])
    op.drop_index("ix_audit_log_tenant_id", table_name="audit_log")


def downgrade() -> None:
    op.create_index("ix_audit_log_tenant_id", "audit_log", ["tenant_id"])
    op.drop_index("ix_audit_log_tenant_id_id", table_name="audit_log")
    op.create_index("ix_jobs_tenant_id", "jobs", ["tenant_id"])
    op.drop_index("ix_jobs_tenant_id_status_created_at", table_name="jobs")
