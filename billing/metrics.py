"""Prometheus counters of the billing domain, counted only once their transaction commits.

Services call the helpers below with their session; the increments wait in
``session.info`` and are applied by an ``after_commit`` hook, and dropped when the
transaction rolls back, so a failed request never shows up as Tokens moved. (A savepoint
rolled back inside a committed transaction would still count: billing uses none.) Called
with an autocommit connection (``Database.autocommit``), whose statement committed by
itself, they count at once.

The ledger verification's gauges are here too; ``billing.ledger_verify`` runs it and sets them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

TOKENS_MOVED = Counter(
    "swapmeter_tokens_moved_total",
    "Tokens moved by the ledger, by tenant and entry kind (hold/release count reservations).",
    ["tenant", "kind"],
)
TOKENS_HELD_AT_PEAK = Counter(
    "swapmeter_tokens_held_at_peak_total",
    "Tokens held by swaps priced at a peak multiplier (> 1: the queue was at or over the "
    "tenant's peak threshold), by tenant; the whole hold, base price included.",
    ["tenant"],
)
HOLDS_AT_PEAK = Counter(
    "swapmeter_holds_at_peak_total",
    "Holds made at a peak multiplier (> 1), by tenant.",
    ["tenant"],
)
BULK_BATCHES = Counter(
    "swapmeter_bulk_recharge_batches_total",
    "Bulk recharge batches by outcome (applied, pending_approval, rejected).",
    ["status"],
)
for _status in ("applied", "pending_approval", "rejected"):  # exported at 0 from the start
    BULK_BATCHES.labels(_status)
BULK_FAILED_ENTRIES = Counter(
    "swapmeter_bulk_recharge_failed_entries_total",
    "Bulk recharge entries refused, by error code.",
    ["code"],
)

# The checks of a ledger verification (billing/verify.py, the jobs' job_hold, the audit
# chain); anything new is counted as "other" until it is listed here.
VERIFY_CHECKS = (
    "balance",
    "held",
    "open_holds",
    "zero_sum",
    "account_reference",
    "hold_entries",
    "job_hold",
    "usage_rollup",
    "audit_chain",
    "other",
)
VERIFY_OK = Gauge(
    "swapmeter_ledger_verify_ok",
    "1 when the latest whole-ledger verification found nothing wrong, 0 when it found "
    "mismatches or a broken audit chain (cluster-wide; aggregate with max).",
    multiprocess_mode="mostrecent",
)
VERIFY_LAST_RUN = Gauge(
    "swapmeter_ledger_verify_last_run_timestamp_seconds",
    "Unix time of the latest whole-ledger verification, periodic or asked for (0: none "
    "yet; cluster-wide, aggregate with max).",
    multiprocess_mode="mostrecent",
)
VERIFY_SECONDS = Gauge(
    "swapmeter_ledger_verify_duration_seconds",
    "How long the latest whole-ledger verification took (cluster-wide).",
    multiprocess_mode="mostrecent",
)
VERIFY_MISMATCHES = Gauge(
    "swapmeter_ledger_verify_mismatches",
    "Mismatches the latest whole-ledger verification found, by check (zero_sum: a "
    "tenant's accounts do not add up to zero; audit_chain: 1 when the chain is broken).",
    ["check"],
    multiprocess_mode="mostrecent",
)

# The daily refill of plans' free Tokens (billing/daily_refill.py).
REFILL_RUNS = Counter(
    "swapmeter_plan_refills_total",
    "Plan refills run to the end (a plan's day paid to every user due), and those that "
    "failed (retried by the next round).",
    ["outcome"],
)
for _outcome in ("done", "failed"):
    REFILL_RUNS.labels(_outcome)
REFILL_USERS = Counter(
    "swapmeter_plan_refill_users_total", "Users whose daily grant a plan refill topped up."
)
REFILL_TOKENS = Counter(
    "swapmeter_plan_refill_tokens_total", "Tokens granted by plan refills (daily grants)."
)
REFILL_SECONDS = Histogram(
    "swapmeter_plan_refill_duration_seconds",
    "How long a plan's refill took, all its chunks.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)

_PENDING = "billing_metrics_pending"


def show_verification(last: dict[str, Any]) -> None:
    """Set the verification gauges from a result as ``billing.ledger_verify`` keeps it."""
    VERIFY_OK.set(1 if last["ok"] else 0)
    VERIFY_LAST_RUN.set(last["at"])
    VERIFY_SECONDS.set(last["seconds"])
    for check in VERIFY_CHECKS:
        VERIFY_MISMATCHES.labels(check).set(last["mismatches"].get(check, 0))


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


def held_at_peak(
    session: AsyncSession | AsyncConnection, tenant_id: uuid.UUID, amount: int
) -> None:
    def apply() -> None:
        TOKENS_HELD_AT_PEAK.labels(str(tenant_id)).inc(amount)
        HOLDS_AT_PEAK.labels(str(tenant_id)).inc()

    _defer(session, apply)


def bulk_batch(session: AsyncSession, status: str, failed_codes: dict[str, int]) -> None:
    def apply() -> None:
        BULK_BATCHES.labels(status).inc()
        for code, count in failed_codes.items():
            BULK_FAILED_ENTRIES.labels(code).inc(count)

    _defer(session, apply)


def refilled(session: AsyncSession, users: int, tokens: int) -> None:
    def apply() -> None:
        REFILL_USERS.inc(users)
        REFILL_TOKENS.inc(tokens)

    if users:
        _defer(session, apply)


def refill_run(session: AsyncSession, seconds: float) -> None:
    def apply() -> None:
        REFILL_RUNS.labels("done").inc()
        REFILL_SECONDS.observe(seconds)

    _defer(session, apply)


def refill_failed() -> None:
    REFILL_RUNS.labels("failed").inc()


@event.listens_for(Session, "after_commit")
def _count_after_commit(session: Session) -> None:
    for apply in session.info.pop(_PENDING, ()):
        apply()


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
