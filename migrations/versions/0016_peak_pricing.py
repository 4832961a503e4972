"""Load pricing: a peak multiplier on price books, recorded on every hold and job.

- ``price_books.peak_queue_depth_at_least`` and ``peak_multiplier``: both null (no load
  pricing) or both set, the multiplier above 1 and at most 10 (NUMERIC(4,2): two decimal
  places, exact). Price books stay append-only: a peak change is a new version.
- ``holds.multiplier`` and ``jobs.multiplier``: the multiplier a swap was held at, 1 when
  none applied; every row written before this revision was held at 1.

The new columns have constant defaults (no table rewrite). Their checks are added
NOT VALID and then validated, so that validating the existing rows of holds and jobs
takes no lock that blocks writes.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_CHECKS = (
    (
        "price_books",
        "ck_price_books_peak_in_range",
        "(peak_queue_depth_at_least IS NULL) = (peak_multiplier IS NULL)"
        " AND (peak_multiplier IS NULL OR (peak_queue_depth_at_least >= 1"
        " AND peak_multiplier > 1 AND peak_multiplier <= 10))",
    ),
    ("holds", "ck_holds_multiplier_in_range", "multiplier >= 1 AND multiplier <= 10"),
    ("jobs", "ck_jobs_multiplier_in_range", "multiplier >= 1 AND multiplier <= 10"),
)


def upgrade() -> None:
    op.add_column("price_books", sa.Column("peak_queue_depth_at_least", sa.Integer()))
    op.add_column("price_books", sa.Column("peak_multiplier", sa.Numeric(4, 2)))
    for table in ("holds", "jobs"):
        op.add_column(
            table,
            sa.Column("multiplier", sa.Numeric(4, 2), nullable=False, server_default="1"),
        )
    for table, name, check in _CHECKS:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({check}) NOT VALID")
        op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def downgrade() -> None:
    for table, name, _ in _CHECKS:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    for table in ("jobs", "holds"):
        op.drop_column(table, "multiplier")
    op.drop_column("price_books", "peak_multiplier")
    op.drop_column("price_books", "peak_queue_depth_at_least")
