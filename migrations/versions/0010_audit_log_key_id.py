"""Audit rows name the key that signed their hash (keyed audit chain).

From this revision each new audit row's hash is an HMAC-SHA256 under a key kept outside
the database (``SWAPMETER_AUDIT_KEY``), and ``key_id`` names that key, so that keys can be
rotated while older rows still verify. Rows written before (``key_id`` NULL) keep their
plain sha256 hash and verify as before; the first keyed row chains on from the last of
them. Adding a nullable column rewrites no row, so the append-only triggers stay on.

A downgrade is refused once keyed rows exist: the code before this revision would report
them all as forged.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("key_id", sa.String(32), nullable=True))


def downgrade() -> None:
    keyed = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM audit_log WHERE key_id IS NOT NULL"))
        .scalar_one()
    )
    if keyed:
        raise RuntimeError(
            f"{keyed} audit rows are signed with an audit key: the code before revision 0010 "
            "would take them for forgeries; downgrade refused"
        )
    op.drop_column("audit_log", "key_id")
