"""A bulk recharge remembers what it was sent: its Idempotency-Key then matches only it.

A batch's (tenant, Idempotency-Key) is unique for good, while the HTTP store of keys is
purged after SWAPMETER_IDEMPOTENCY_TTL_HOURS. Without the request's fingerprint on the
batch, a key reused after that for a different batch was answered with the old batch's
report and applied nothing. Batches written before this revision have none and are
replayed as before.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("recharge_batches", sa.Column("request_hash", sa.String(64)))


def downgrade() -> None:
    op.drop_column("recharge_batches", "request_hash")
