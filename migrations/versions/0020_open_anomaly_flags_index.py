"""A tenant's open anomaly flags: ``anomaly_flags (tenant_id, id) WHERE status = 'open'``.

The overview counts a tenant's open flags on every view, and the flags page lists them
newest first (``status=open``, keyset on id). The only tenant index was
``(tenant_id, id)`` (revision 0015), which reads every flag the tenant ever had, resolved
ones included, and checks each row's status: flags pile up resolved for years. This
partial index holds the open flags only (a review queue: few), so the count (capped) and
the open list are a short range of it, whatever the tenant's history.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_anomaly_flags_tenant_id_open",
        "anomaly_flags",
        ["tenant_id", "id"],
        postgresql_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("ix_anomaly_flags_tenant_id_open", table_name="anomaly_flags")
