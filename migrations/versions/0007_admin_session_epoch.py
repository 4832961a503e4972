"""Disabling an admin ends that admin's sessions for good.

A disabled admin's tokens were refused only while the account stayed disabled: re-enabled,
every token issued before the disable (perhaps the stolen one that was the reason for
disabling) worked again until it expired. Each admin now has a session epoch, written
into its tokens and raised when the admin is disabled: a token of an older epoch is
refused. Tokens issued before this revision carry none and count as epoch 0, so the
upgrade signs nobody out.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "admins",
        sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("admins", "session_epoch")
