"""Price books: what a swap costs each tenant's users, in Tokens, versioned.

A tenant's prices are a row per change in ``price_books`` (never edited: the database
refuses UPDATE and DELETE), numbered 1, 2, 3... per tenant. A tenant without a row pays
the platform default, version 0. Every job records the version it was priced with, and so
does its hold (``holds.price_version``), so a bill can always be explained after prices
changed.

Fields, all integer Tokens:

- ``image``: one swapped image (at least 1: every job holds Tokens);
- ``video_second``: each started second of target video (at least 1);
- ``enhance_surcharge``: added to ``image`` when ``enhance`` is on;
- ``enhance_video_second_surcharge``: added to ``video_second`` when ``enhance`` is on
  (the face enhancer runs on every frame, so video pays per second).

A book may also carry a ``peak``: ``{queue_depth_at_least, multiplier}``. While at least
that many jobs wait in the queue (cluster-wide, the number ``swapmeter_jobs_in_queue``
reports), a swap holds ``ceil(price * multiplier)`` Tokens: the price as above (image, or
per started second times the seconds), multiplied, then rounded *up* to a whole Token
once, so Tokens stay integers and a multiplier never makes a swap cheaper than its base.
The multiplier is a decimal above 1 and at most 10, with at most two decimal places
(1.5, 2, 1.25), stored as NUMERIC and multiplied as ``Decimal``: no float in the bill.
The multiplier applied is recorded on the hold and on the job.

No inference imports here: a video's duration comes in as a number.
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.errors import InvalidAmount, NotFound, ValidationError

MAX_PRICE = 1_000_000  # Tokens per unit; a sanity bound against typos (10**6 per image)
MAX_MULTIPLIER = Decimal(10)  # a peak price at most 10 times the base: a bound against typos
MAX_PEAK_DEPTH = 1_000_000_000  # jobs queued; any more is a typo
NO_MULTIPLIER = Decimal(1)
PRICE_FIELDS = ("image", "video_second", "enhance_surcharge", "enhance_video_second_surcharge")
# pg_advisory_xact_lock namespace for "next version of this tenant's book" ("pric").
_VERSION_LOCK_NAMESPACE = 0x70726963


class PriceBookRow(Base):
    """One version of a tenant's prices (append-only, migration 0004)."""

    __tablename__ = "price_books"
    __table_args__ = (
        UniqueConstraint("tenant_id", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("image >= 1 AND video_second >= 1", name="units_cost_something"),
        CheckConstraint(
            "enhance_surcharge >= 0 AND enhance_video_second_surcharge >= 0",
            name="surcharges_not_negative",
        ),
        CheckConstraint(
            "(peak_queue_depth_at_least IS NULL) = (peak_multiplier IS NULL)"
            " AND (peak_multiplier IS NULL OR (peak_queue_depth_at_least >= 1"
            " AND peak_multiplier > 1 AND peak_multiplier <= 10))",
            name="peak_in_range",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    version: Mapped[int] = mapped_column(Integer)
    image: Mapped[int] = mapped_column(BigInteger)
    video_second: Mapped[int] = mapped_column(BigInteger)
    enhance_surcharge: Mapped[int] = mapped_column(BigInteger)
    enhance_video_second_surcharge: Mapped[int] = mapped_column(BigInteger)
    # Migration 0016: the peak multiplier and the queue depth from which it applies.
    peak_queue_depth_at_least: Mapped[int | None] = mapped_column(Integer)
    peak_multiplier: Mapped[Decimal | None] = mapped_column(Numeric(4, 2))
    reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_by_email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


@dataclass(frozen=True)
class Peak:
    """Prices times ``multiplier`` while at least ``queue_depth_at_least`` jobs are queued."""

    queue_depth_at_least: int
    multiplier: Decimal  # > 1, <= MAX_MULTIPLIER, two decimal places at most

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue_depth_at_least": self.queue_depth_at_least,
            "multiplier": multiplier_json(self.multiplier),
        }


@dataclass(frozen=True)
class PriceBook:
    version: int  # 0: the platform default
    image: int
    video_second: int
    enhance_surcharge: int
    enhance_video_second_surcharge: int
    created_at: datetime | None = None
    created_by_email: str | None = None
    reason: str | None = None
    peak: Peak | None = None

    def multiplier_at(self, queue_depth: int) -> Decimal:
        """The multiplier in force with ``queue_depth`` jobs queued: the peak's from its
        threshold on, else 1."""
        if self.peak is None or queue_depth < self.peak.queue_depth_at_least:
            return NO_MULTIPLIER
        return self.peak.multiplier

    def unit_price(self, kind: Literal["image", "video"], *, enhance: bool) -> int:
        """Tokens per image, or per started video second."""
        if kind == "image":
            return self.image + (self.enhance_surcharge if enhance else 0)
        return self.video_second + (self.enhance_video_second_surcharge if enhance else 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "currency": "token",
            "image": self.image,
            "video_second": self.video_second,
            "enhance_surcharge": self.enhance_surcharge,
            "enhance_video_second_surcharge": self.enhance_video_second_surcharge,
            "peak": self.peak.as_dict() if self.peak is not None else None,
            "effective_from": self.created_at,
        }


DEFAULT_PRICE_BOOK = PriceBook(
    version=0, image=1, video_second=10, enhance_surcharge=1, enhance_video_second_surcharge=5
)


def billable_seconds(seconds: float) -> int:
    """Started seconds: 0.2 s bills 1, 2.0 s bills 2, 2.01 s bills 3.

    A hair of float noise over a whole second (2.0000001 from a probe) is not a started
    second: durations are rounded to the millisecond first.
    """
    if seconds <= 0:
        return 0
    return max(1, math.ceil(round(seconds, 3)))


def video_price(unit_price: int, seconds: float) -> int:
    return unit_price * billable_seconds(seconds)


def at_multiplier(tokens: int, multiplier: Decimal) -> int:
    """``tokens`` at ``multiplier``, rounded up to a whole Token, exactly (Decimal): 1 at
    1.25 is 2, 3 at 1.5 is 5, 20 at 2 is 40. At 1, ``tokens`` unchanged."""
    if multiplier == NO_MULTIPLIER:
        return tokens
    return int((tokens * multiplier).to_integral_value(rounding=ROUND_CEILING))


def multiplier_json(multiplier: Decimal) -> float:
    """A multiplier as a JSON number (2.0, 1.25): at most two decimal places, so the
    float prints as the decimal it is."""
    return float(multiplier)


# -- SQL ---------------------------------------------------------------------------------

_COLUMNS = (
    "version, image, video_second, enhance_surcharge, enhance_video_second_surcharge,"
    " peak_queue_depth_at_least, peak_multiplier, created_at, created_by_email, reason"
)

# The tenant's current version as SQL (0: the default), for a statement that prices and
# writes in one go: it writes only when this equals the version it was priced with.
CURRENT_VERSION_SQL = (
    "(SELECT CAST(coalesce(max(version), 0) AS bigint) FROM price_books"
    " WHERE tenant_id = :tenant_id)"
)

_CURRENT = text(
    f"SELECT {_COLUMNS} FROM price_books WHERE tenant_id = :tenant_id ORDER BY version DESC LIMIT 1"
)

_BY_VERSION = text(
    f"SELECT {_COLUMNS} FROM price_books WHERE tenant_id = :tenant_id AND version = :version"
)

_HISTORY = text(
    f"SELECT {_COLUMNS} FROM price_books WHERE tenant_id = :tenant_id "
    "ORDER BY version DESC LIMIT :limit"
)

_LOCK_VERSIONS = text(
    "SELECT pg_advisory_xact_lock(:namespace, hashtext(CAST(:tenant_id AS text)))"
)

_INSERT = text(
    f"""
    INSERT INTO price_books (tenant_id, version, image, video_second, enhance_surcharge,
                             enhance_video_second_surcharge, peak_queue_depth_at_least,
                             peak_multiplier, reason, created_by, created_by_email)
    SELECT :tenant_id, coalesce(max(version), 0) + 1, :image, :video_second,
           :enhance_surcharge, :enhance_video_second_surcharge,
           CAST(:peak_queue_depth_at_least AS integer), CAST(:peak_multiplier AS numeric),
           :reason, :created_by, :created_by_email
    FROM price_books WHERE tenant_id = :tenant_id
    RETURNING {_COLUMNS}
    """
)


def _book(row: Any) -> PriceBook:
    return PriceBook(
        version=row.version,
        image=row.image,
        video_second=row.video_second,
        enhance_surcharge=row.enhance_surcharge,
        enhance_video_second_surcharge=row.enhance_video_second_surcharge,
        created_at=row.created_at,
        created_by_email=row.created_by_email,
        reason=row.reason,
        peak=(
            Peak(row.peak_queue_depth_at_least, row.peak_multiplier)
            if row.peak_multiplier is not None
            else None
        ),
    )


# -- use cases ---------------------------------------------------------------------------


async def current_book(session: AsyncSession | AsyncConnection, tenant_id: uuid.UUID) -> PriceBook:
    """The tenant's newest book, or the platform default (version 0)."""
    row = (await session.execute(_CURRENT, {"tenant_id": tenant_id})).first()
    return _book(row) if row is not None else DEFAULT_PRICE_BOOK


class BookCache:
    """Each tenant's newest book as this process last read it: a query less per swap.

    A book never changes once written (a price change is a new version), so a cached book
    is right for its version. Whether that version is still the newest is checked by the
    statement that charges with it (``CURRENT_VERSION_SQL``); when it is not, the caller
    reads the book afresh (``refresh``) and prices again. A price change therefore counts
    from the next request, as without the cache.
    """

    def __init__(self, max_tenants: int = 10_000) -> None:
        self.max_tenants = max_tenants
        self._books: OrderedDict[uuid.UUID, PriceBook] = OrderedDict()

    async def get(self, session: AsyncSession | AsyncConnection, tenant_id: uuid.UUID) -> PriceBook:
        book = self._books.get(tenant_id)
        if book is None:
            return await self.refresh(session, tenant_id)
        self._books.move_to_end(tenant_id)
        return book

    async def refresh(
        self, session: AsyncSession | AsyncConnection, tenant_id: uuid.UUID
    ) -> PriceBook:
        book = await current_book(session, tenant_id)
        self._books[tenant_id] = book
        self._books.move_to_end(tenant_id)
        while len(self._books) > self.max_tenants:
            self._books.popitem(last=False)
        return book


PROCESS_BOOKS = BookCache()


async def book_version(session: AsyncSession, tenant_id: uuid.UUID, version: int) -> PriceBook:
    """One past version (0 is the default), to explain an old bill."""
    if version == 0:
        return DEFAULT_PRICE_BOOK
    row = (await session.execute(_BY_VERSION, {"tenant_id": tenant_id, "version": version})).first()
    if row is None:
        raise NotFound(f"Price book version {version} not found")
    return _book(row)


async def history(session: AsyncSession, tenant_id: uuid.UUID, limit: int = 100) -> list[PriceBook]:
    """Newest first; the default (version 0) is not a row and is not listed."""
    rows = await session.execute(_HISTORY, {"tenant_id": tenant_id, "limit": limit})
    return [_book(r) for r in rows]


def check_prices(prices: dict[str, Any]) -> dict[str, int]:
    """Integers in range; the two base prices at least 1 (every job must hold Tokens)."""
    return {name: _checked_price(name, prices.get(name)) for name in PRICE_FIELDS}


def check_changes(changes: Mapping[str, Any]) -> dict[str, int]:
    """The prices an admin sent, as sent: each a JSON integer in range, else 400
    InvalidAmount (``"3"``, ``3.0``, ``true`` and ``null`` are refused, not coerced)."""
    return {name: _checked_price(name, value) for name, value in changes.items()}


def check_peak(value: Any) -> Peak | None:
    """A peak as an admin sent it: null (no peak), or ``{queue_depth_at_least, multiplier}``
    with an integer depth of at least 1 and a JSON number above 1 and at most 10 with at
    most two decimal places; else 422 ValidationError (strings and booleans refused)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"queue_depth_at_least", "multiplier"}:
        raise ValidationError("peak must be null or {queue_depth_at_least, multiplier}")
    depth, raw = value["queue_depth_at_least"], value["multiplier"]
    if type(depth) is not int or not 1 <= depth <= MAX_PEAK_DEPTH:
        raise ValidationError(
            f"peak.queue_depth_at_least must be an integer, 1 to {MAX_PEAK_DEPTH}"
        )
    problem = f"peak.multiplier must be a number above 1 and at most {MAX_MULTIPLIER}"
    if type(raw) not in (int, float) or not math.isfinite(raw):
        raise ValidationError(problem)
    # Hundredths: 1.15 may arrive as 1.1500000000000001 (115 * 0.01 in a client's float
    # arithmetic); that is 1.15, while 1.155 is refused.
    hundredths = round(raw * 100)
    if abs(raw * 100 - hundredths) > 1e-6:
        raise ValidationError("peak.multiplier has at most two decimal places")
    multiplier = Decimal(hundredths) / 100
    if not NO_MULTIPLIER < multiplier <= MAX_MULTIPLIER:
        raise ValidationError(problem)
    return Peak(depth, multiplier.quantize(Decimal("0.01")))


def _checked_price(name: str, value: Any) -> int:
    if type(value) is not int:  # bool is an int subclass: True must not read as 1
        raise InvalidAmount(f"{name} must be an integer number of Tokens")
    low = 1 if name in ("image", "video_second") else 0
    if not low <= value <= MAX_PRICE:
        raise InvalidAmount(f"{name} must be between {low} and {MAX_PRICE}")
    return value


async def set_prices(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    prices: dict[str, Any],
    *,
    created_by: uuid.UUID | None,
    created_by_email: str | None,
    reason: str | None,
) -> tuple[PriceBook, PriceBook]:
    """Write the tenant's next version; the book it replaced and the new one. Fields left
    out keep their current value; ``prices["peak"]`` (a checked ``Peak``, or None to
    remove it) replaces the peak when given.

    Prices equal to the current ones write nothing: both books returned are the current
    one (same version), so the caller can tell and skip the audit record.

    Two admins changing prices at once get consecutive versions (a per-tenant advisory
    lock), never a unique-key error, and the second one's change is merged into the
    first's (the current book is read once the lock is held), never over a stale copy.
    """
    await session.execute(
        _LOCK_VERSIONS, {"namespace": _VERSION_LOCK_NAMESPACE, "tenant_id": str(tenant_id)}
    )
    current = await current_book(session, tenant_id)
    merged = {name: prices.get(name, getattr(current, name)) for name in PRICE_FIELDS}
    checked = check_prices(merged)
    peak = prices["peak"] if "peak" in prices else current.peak
    if peak == current.peak and all(
        checked[name] == getattr(current, name) for name in PRICE_FIELDS
    ):
        return current, current
    row = (
        await session.execute(
            _INSERT,
            {
                "tenant_id": tenant_id,
                **checked,
                "peak_queue_depth_at_least": peak.queue_depth_at_least if peak else None,
                "peak_multiplier": peak.multiplier if peak else None,
                "reason": reason,
                "created_by": created_by,
                "created_by_email": created_by_email,
            },
        )
    ).one()
    return current, _book(row)
