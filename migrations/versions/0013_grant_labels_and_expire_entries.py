"""Campaign grants: a label on each grant lot and on pending batches; expiry entries are ``expire``.

- ``token_grants.label``: the campaign a lot came from (at most 100 characters), shown
  with what expires when (GET /balance, the admin user view).
- ``recharge_batches.expires_at`` and ``label``: a bulk recharge with ``expires_at`` is a
  batch of grants; a batch waiting for approval keeps them until it is applied.
- The ledger kind of an expiry is ``expire`` (CONTRACT.md, "v1 additions"), no longer
  ``expiry``. The entries written before are renamed in place: only the kind's name
  changes, no amount or balance, so the append-only trigger is lifted for that one
  statement, and so are their daily rollups (``ledger:expiry`` to ``ledger:expire`` in
  ``usage_deltas`` and ``usage_daily``, revision 0012). The downgrade renames them back.

An image from before this revision still writes ``expiry`` in its expiry pass, which the
new check refuses (that pass fails and its next turn retries it): run an older image on
this schema no longer than a deploy takes.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_KINDS = ("recharge", "grant", "{expiry}", "hold", "capture", "release", "refund", "adjustment")


def _rename_expiry_entries(old: str, new: str) -> None:
    op.execute("ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_kind_known")
    op.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only")
    op.execute(f"UPDATE ledger_entries SET kind = '{new}' WHERE kind = '{old}'")
    op.execute("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only")
    kinds = ", ".join(f"'{k}'" for k in _KINDS).replace("{expiry}", new)
    op.execute(
        "ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_kind_known"
        f" CHECK (kind IN ({kinds}))"
    )
    # The rollups name a ledger metric by its kind: they follow, merged into any row of
    # the new name (usage_daily has one row per tenant, day and metric).
    op.execute(f"UPDATE usage_deltas SET metric = 'ledger:{new}' WHERE metric = 'ledger:{old}'")
    op.execute(
        f"""
        INSERT INTO usage_daily (tenant_id, day, metric, count, tokens, seconds)
        SELECT tenant_id, day, 'ledger:{new}', count, tokens, seconds FROM usage_daily
        WHERE metric = 'ledger:{old}'
        ON CONFLICT (tenant_id, day, metric) DO UPDATE
        SET count = usage_daily.count + EXCLUDED.count,
            tokens = usage_daily.tokens + EXCLUDED.tokens,
            seconds = usage_daily.seconds + EXCLUDED.seconds
        """
    )
    op.execute(f"DELETE FROM usage_daily WHERE metric = 'ledger:{old}'")


def upgrade() -> None:
    op.add_column("token_grants", sa.Column("label", sa.String(100)))
    op.add_column("recharge_batches", sa.Column("expires_at", sa.DateTime(timezone=True)))
    op.add_column("recharge_batches", sa.Column("label", sa.String(100)))
    _rename_expiry_entries("expiry", "expire")


def downgrade() -> None:
    _rename_expiry_entries("expire", "expiry")
    op.drop_column("recharge_batches", "label")
    op.drop_column("recharge_batches", "expires_at")
    op.drop_column("token_grants", "label")
