"""Prometheus counters of the billing domain, counted only once their transaction commits.

Services call the helpers below with their session; the increments wait in
``session.info`` and are applied by an ``after_commit`` hook, and dropped when the
transaction rolls back, so a failed request never shows up as Tokens moved. (A savepoint
rolled back inside a committed transaction would still count: billing uses none.) Called
with an autocommit connection (``Database.autocommit``), whose statement committed by
itself, they count at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from prometheus_client import Counter
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

TOKENS_MOVED = Counter(
    "swapmeter_tokens_moved_total",
    "Tokens moved by the ledger, by tenant and entry kind (hold/release count reservations).",
    ["tenant", "kind"],
)
BULK_BATCHES = Counter(
    "swapmeter_bulk_recharge_batches_total",
    "Bulk recharge batches by outcome (applied, pending_approval, rejected).",
    ["status"],
)
BULK_FAILED_ENTRIES = Counter(
    "swapmeter_bulk_recharge_failed_entries_total",
    "Bulk recharge entries refused, by error code.",
    ["code"],
)

_PENDING = "billing_metrics_pending"


def _defer(session: AsyncSession | AsyncConnection, apply: Callable[[], None]) -> None:
    if isinstance(session, AsyncSession):
        session.sync_session.info.setdefault(_PENDING, []).append(apply)
    elif session.sync_connection is not None and (
        session.sync_connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
    ):
        apply()
    else:
        raise TypeError("billing metrics need a session, or an autocommit connection")


def tokens_moved(
    session: AsyncSession | AsyncConnection, tenant_id: uuid.UUID | str, kind: str, amount: int
) -> None:
    if amount > 0:
        _defer(session, lambda: TOKENS_MOVED.labels(str(tenant_id), kind).inc(amount))


def bulk_batch(session: AsyncSession, status: str, failed_codes: dict[str, int]) -> None:
    def apply() -> None:
        BULK_BATCHES.labels(status).inc()
        for code, count in failed_codes.items():
            BULK_FAILED_ENTRIES.labels(code).inc(count)

    _defer(session, apply)


@event.listens_for(Session, "after_commit")
def _count_after_commit(session: Session) -> None:
    for apply in session.info.pop(_PENDING, ()):
        apply()


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
