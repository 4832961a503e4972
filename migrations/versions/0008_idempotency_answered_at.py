"""A swap replayed with its Idempotency-Key answers as the first request answered.

A swap's key is stored with its 202 answer when the job is created, before the first
request has answered: that request may still answer 200 once the job ends (an image, or
a video within ``Prefer: wait``). ``answered_at`` records when the first answer went out,
and ``response_status`` then says which it was, so that a replay repeats it (202 stays
202, 200 stays 200) whatever the replay's own ``Prefer`` says. A key whose first request
is still answering (no ``answered_at``; also every key stored before this revision) is
replayed as before: the replay waits for the job as its request asks.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "idempotency_keys", sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("idempotency_keys", "answered_at")
