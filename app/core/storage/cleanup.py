"""Removing results past retention and temporary files of interrupted writes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from app.core.storage.base import ANCHORS_PREFIX, ResultStore, valid_key

log = logging.getLogger(__name__)

DEFAULT_TEMP_MAX_AGE = timedelta(hours=1)

RESULTS_CLEANED = Counter(
    "swapmeter_results_cleaned_total",
    "Files removed by the results cleanup: expired results and stray temporary files.",
    ["kind"],
)


@dataclass(frozen=True)
class CleanupReport:
    results_deleted: int
    temp_deleted: int


async def cleanup(
    store: ResultStore,
    older_than: timedelta,
    *,
    temp_older_than: timedelta = DEFAULT_TEMP_MAX_AGE,
    now: datetime | None = None,
) -> CleanupReport:
    """Delete results older than ``older_than`` and temp files older than ``temp_older_than``.

    Temp files get their own, shorter age: younger ones may belong to a write in progress.
    """
    current = now or datetime.now(UTC)
    deleted = 0
    strangers: list[str] = []
    for key in await store.list_expired(current - older_than):
        if key.startswith(ANCHORS_PREFIX):
            continue
        if not valid_key(key):
            strangers.append(key)  # not a name SwapMeter writes (a folder marker, a copy)
            continue
        try:
            if await store.delete(key):
                deleted += 1
        except Exception:  # noqa: BLE001 - one object must not keep the others forever
            log.warning("results cleanup could not delete %s", key, exc_info=True)
    if strangers:
        log.warning(
            "results cleanup left alone %d object(s) SwapMeter did not write, e.g. %r",
            len(strangers),
            strangers[0],
        )
    temp_deleted = await store.delete_stray_temp(current - temp_older_than)
    RESULTS_CLEANED.labels("result").inc(deleted)
    RESULTS_CLEANED.labels("temp").inc(temp_deleted)
    if deleted or temp_deleted:
        log.info("results cleanup: %d expired results, %d temp files", deleted, temp_deleted)
    return CleanupReport(deleted, temp_deleted)


async def run_cleanup_loop(store: ResultStore, older_than: timedelta, interval_s: float) -> None:
    """Run ``cleanup`` every ``interval_s`` until cancelled; a failed round is logged."""
    while True:
        try:
            await cleanup(store, older_than)
        except Exception:  # noqa: BLE001 - a bad round must not stop the loop
            log.exception("results cleanup failed")
        await asyncio.sleep(interval_s)
