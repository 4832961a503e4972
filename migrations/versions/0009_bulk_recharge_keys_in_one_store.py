"""A bulk recharge's Idempotency-Key lives where every other key does: idempotency_keys.

Until now a bulk recharge claimed its key twice: in idempotency_keys (the HTTP answer,
purged after SWAPMETER_IDEMPOTENCY_TTL_HOURS) and in recharge_batches.idempotency_key
(unique for good, so that a batch retried days later was still not credited twice). Now
it claims it once, in idempotency_keys, as a ``permanent`` key that the purge never
deletes. This revision moves the keys of existing batches there:

- a batch whose key is still stored for the bulk route: that key becomes permanent;
- a batch whose key was purged: a permanent key answering the batch's report as it reads
  now (what a replay of it answered until now), with the batch's request fingerprint.
  A batch from before revision 0006 has none: its key keeps matching any request to the
  bulk route, as it did (``request_hash`` may now be NULL for that);
- a batch whose key was purged and then taken by another write of the same tenant (the
  same key reused days later): that write's key stays as it is, purged in its turn.

recharge_batches.idempotency_key, request_hash and their unique constraint stay, no longer
written or read by this code: an image from before this revision, which may run on this
schema during a rolling deploy or after a rollback, still writes them. A later revision
may drop them. Such an image's purge knows no ``permanent`` and deletes those keys too
once past the TTL: the batches made since this revision, which carry no key of their own,
would then be forgotten. Run an older image on this schema no longer than a deploy takes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import uuid
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BULK_PATH = "'POST /api/v1/admin/tenants/' || b.tenant_id::text || '/recharges/bulk'"
_SCOPE = "'tenant:' || b.tenant_id::text"
_PAGE = 500


def upgrade() -> None:
    op.add_column(
        "idempotency_keys",
        sa.Column("permanent", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.alter_column("idempotency_keys", "request_hash", nullable=True)
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.create_index(
        "ix_idempotency_keys_created_at",
        "idempotency_keys",
        ["created_at"],
        postgresql_where=sa.text("NOT permanent"),
    )
    op.execute(
        f"""
        UPDATE idempotency_keys k SET permanent = true
        FROM recharge_batches b
        WHERE b.idempotency_key IS NOT NULL AND k.scope = {_SCOPE}
          AND k.key = b.idempotency_key
          AND k.method_path LIKE 'POST /api/v1/admin/tenants/%/recharges/bulk'
        """
    )
    _copy_purged_batch_keys(op.get_bind())


def _copy_purged_batch_keys(bind: Any) -> None:
    """A permanent key for each keyed batch whose key is no longer stored, page by page."""
    select = sa.text(
        f"""
        SELECT b.id, {_SCOPE} AS scope, b.idempotency_key, {_BULK_PATH} AS method_path,
               b.request_hash, b.status, b.mode, b.requested, b.succeeded, b.failed,
               b.total_amount, b.failed_users, b.reason, b.operator, b.created_by_email,
               b.approved_by_email, b.created_at, b.approved_at, b.applied_at
        FROM recharge_batches b
        WHERE b.idempotency_key IS NOT NULL AND b.id > :after
          AND NOT EXISTS (SELECT 1 FROM idempotency_keys k
                          WHERE k.scope = {_SCOPE} AND k.key = b.idempotency_key)
        ORDER BY b.id LIMIT :page
        """
    )
    insert = sa.text(
        """
        INSERT INTO idempotency_keys (scope, key, method_path, request_hash, response_status,
                                      response_body, created_at, permanent)
        VALUES (:scope, :key, :method_path, :request_hash, 200, CAST(:body AS jsonb),
                :created_at, true)
        ON CONFLICT (scope, key) DO NOTHING
        """
    )
    after = uuid.UUID(int=0)
    while True:
        rows = bind.execute(select, {"after": after, "page": _PAGE}).mappings().all()
        if not rows:
            return
        bind.execute(
            insert,
            [
                {
                    "scope": r["scope"],
                    "key": r["idempotency_key"],
                    "method_path": r["method_path"],
                    "request_hash": r["request_hash"],
                    "body": _report_json(r),
                    "created_at": r["created_at"],
                }
                for r in rows
            ],
        )
        after = rows[-1]["id"]


def _report_json(row: Any) -> str:
    """The batch's report as the bulk route answers it (billing.bulk_recharge.BatchReport),
    written out here so that this revision does not change with that code."""
    failed_users = row["failed_users"]
    if isinstance(failed_users, str):  # jsonb read without a type: its text
        failed_users = orjson.loads(failed_users)
    return orjson.dumps(
        {
            "batch_id": str(row["id"]),
            "status": row["status"],
            "mode": row["mode"],
            "requested": row["requested"],
            "succeeded": row["succeeded"],
            "failed": row["failed"],
            "total_amount": row["total_amount"],
            "failed_users": failed_users,
            "reason": row["reason"],
            "operator": row["operator"],
            "created_by": row["created_by_email"],
            "approved_by": row["approved_by_email"],
            "created_at": _iso(row["created_at"]),
            "approved_at": _iso(row["approved_at"]),
            "applied_at": _iso(row["applied_at"]),
        }
    ).decode()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def downgrade() -> None:
    # Batches made since upgrade() carry their key again (from the key's stored answer),
    # so that the code before this revision, which looks keys up there, still replays them.
    op.execute(
        f"""
        UPDATE recharge_batches b SET idempotency_key = k.key, request_hash = k.request_hash
        FROM idempotency_keys k
        WHERE k.permanent AND b.idempotency_key IS NULL AND k.scope = {_SCOPE}
          AND k.method_path LIKE 'POST /api/v1/admin/tenants/%/recharges/bulk'
          AND k.response_body ->> 'batch_id' = b.id::text
        """
    )
    # Keys without a fingerprint came from batches that still carry them.
    op.execute("DELETE FROM idempotency_keys WHERE request_hash IS NULL")
    op.alter_column("idempotency_keys", "request_hash", nullable=False)
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.drop_column("idempotency_keys", "permanent")
