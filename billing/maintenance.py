"""Periodic billing work: moving expired grant tokens back to issuance, and folding the
usage deltas into the daily rollups (``fold_usage``).

``run_grant_expiry`` is the loop a long-lived process runs (``swapmeter worker`` when it
exists, or any API process: runners in several processes take turns through the advisory
lock in ``service.expire_grants``). Each pass is its own short transaction per batch of
accounts, so a pass never holds account locks for long.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from app.core.db import Database
from billing import service, usage

log = logging.getLogger(__name__)


async def expire_due_grants(db: Database, *, now: datetime | None = None) -> service.ExpiryResult:
    """One pass: expire every lot due by ``now``, batch after batch; returns the totals."""
    grants = tokens = 0
    while True:
        async with db.session() as session:
            result = await service.expire_grants(session, now or datetime.now(UTC))
        grants += result.grants
        tokens += result.tokens
        if result.grants == 0:
            return service.ExpiryResult(grants, tokens)


async def fold_usage(db: Database) -> int:
    """One pass: fold every committed usage delta, batch after batch (each its own
    transaction); returns the rollup rows written. Another process folding: nothing."""
    written = 0
    while True:
        async with db.session() as session:
            rows = await usage.fold(session)
        if not rows:
            return written
        written += rows


async def run_grant_expiry(db: Database, *, interval_s: float = 60.0) -> None:
    """Expire due grants every ``interval_s`` seconds until cancelled."""
    while True:
        try:
            result = await expire_due_grants(db)
            if result.grants:
                log.info("expired %d grant lots, %d tokens", result.grants, result.tokens)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep the loop alive; the next pass retries
            log.exception("grant expiry pass failed")
        await asyncio.sleep(interval_s)
