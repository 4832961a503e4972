"""When a plan's daily refill happens: its local ``refill_time`` in its IANA time zone, as
instants (the standard library's zoneinfo, so DST follows the tz database).

- A refill time that a spring-forward day skips (02:30 when clocks go from 02:00 to 03:00)
  happens at the first instant after the gap (03:00 local).
- One that a fall-back day has twice (01:30) happens at the first of the two.

The *refill day* in force at an instant is the latest local day whose refill instant has
come: before today's refill time it is still yesterday. A day's daily grant expires at
the next day's refill instant.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

REFILL_TIME_PATTERN = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$"
_REFILL_TIME_RE = re.compile(REFILL_TIME_PATTERN)
_ZONE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*$")
MAX_ZONE = 64
# The names a plan may use: the tz database's (the system's, else the tzdata package's).
ZONES = frozenset(z for z in available_timezones() if len(z) <= MAX_ZONE)


def parse_refill_time(value: str) -> time:
    """``HH:MM`` (00:00 to 23:59) as a time; ValueError otherwise."""
    if not isinstance(value, str) or _REFILL_TIME_RE.fullmatch(value) is None:
        raise ValueError("refill_time must be HH:MM, from 00:00 to 23:59")
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (e.g. ``Asia/Seoul``); ValueError when none has it."""
    if not isinstance(name, str) or len(name) > MAX_ZONE or _ZONE_RE.fullmatch(name) is None:
        raise ValueError(f"'{str(name)[:80]}' is not an IANA time zone name such as Asia/Seoul")
    if name not in ZONES:
        raise ValueError(f"no time zone is named '{name}' (IANA names: Area/City)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"no time zone is named '{name}' (IANA names: Area/City)") from None


def refill_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The instant (UTC) of the refill of local ``day`` at wall time ``at``."""
    wall = datetime.combine(day, at)
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if _wall(first, tz) == wall or _wall(second, tz) == wall:
        # Exists; when it exists twice, fold=0 is the first of the two.
        return min(t for t in (first, second) if _wall(t, tz) == wall)
    # In a gap: the earliest instant whose wall time is past ``wall``, found by bisection
    # over whole seconds between the two readings of ``wall`` (transitions fall on seconds).
    low, high = sorted((first, second))
    if _wall(low, tz) > wall:  # not expected with the tz database; be safe
        return low
    lo, hi = 0, int((high - low).total_seconds())
    while lo < hi:
        mid = (lo + hi) // 2
        if _wall(low + timedelta(seconds=mid), tz) > wall:
            hi = mid
        else:
            lo = mid + 1
    return low + timedelta(seconds=lo)


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None, fold=0)


def refill_day_at(now: datetime, at: time, tz: ZoneInfo) -> date:
    """The local day whose refill is the latest one to have come by ``now``."""
    today = now.astimezone(tz).date()
    if refill_instant(today, at, tz) <= now:
        return today
    return today - timedelta(days=1)


def next_refill_after(day: date, at: time, tz: ZoneInfo) -> datetime:
    """When the refill after ``day``'s happens (what ``day``'s daily grant expires at)."""
    return refill_instant(day + timedelta(days=1), at, tz)
