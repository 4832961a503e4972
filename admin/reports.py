"""Reports for finance and support: the user list, daily usage and the ledger export.

The usage report reads the daily rollups (``billing.usage``), never the ledger; the
export streams the ledger in keyset batches from one snapshot, so its memory stays
constant and its sums are the ledger's at one instant (docs/architecture.md, "Reports").
"""

from __future__ import annotations

import base64
import csv
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from admin import report_repository as repo
from admin.schemas import UsageDayOut
from app.auth.dependencies import AdminPrincipal, ensure_tenant_access
from app.core.db import Database
from app.core.errors import InvalidCursor, InvalidDateRange
from app.tenancy import service as tenancy
from billing import usage

MAX_REPORT_DAYS = 366
EXPORT_BATCH = 5000


# -- users ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserPage:
    items: list[repo.UserListRow]
    next_cursor: str | None


def _encode_cursor(sort: str, row: repo.UserListRow) -> str:
    key: Any
    if sort == "external_id":
        key = row.external_id
    elif sort.endswith("created_at"):
        key = row.created_at.isoformat()
    else:
        key = row.balance
    raw = orjson.dumps([sort, key, row.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(sort: str, cursor: str) -> tuple[Any, int]:
    """The (key, user id) a cursor stands for; 400 InvalidCursor for anything else,
    including a cursor of another sort."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_sort, key, user_id = orjson.loads(raw)
        if cursor_sort != sort or not isinstance(user_id, int) or not 0 < user_id < 2**63:
            raise ValueError
        if sort == "external_id" and isinstance(key, str):
            return key, user_id
        if sort.endswith("created_at") and isinstance(key, str):
            return datetime.fromisoformat(key), user_id
        if sort.endswith("balance") and isinstance(key, int) and 0 <= key < 2**63:
            return key, user_id
        raise ValueError
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidCursor("cursor is not one this API returned") from None


async def list_users(
    session: AsyncSession,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    *,
    prefix: str | None,
    status: str | None,
    sort: str,
    cursor: str | None,
    limit: int,
    plan: str | None = None,
) -> UserPage:
    ensure_tenant_access(admin, tenant_id, write=False)
    await tenancy.get_tenant(session, tenant_id)
    after = _decode_cursor(sort, cursor) if cursor else None
    rows = await repo.list_users(
        session,
        tenant_id,
        prefix=prefix,
        status=status,
        sort=sort,
        after=after,
        limit=limit + 1,
        plan=plan,
    )
    next_cursor = _encode_cursor(sort, rows[limit - 1]) if len(rows) > limit else None
    return UserPage(rows[:limit], next_cursor)


# -- usage ---------------------------------------------------------------------------------


USAGE_COLUMNS = tuple(UsageDayOut.model_fields)

# report column -> the ledger kind whose Tokens it sums.
_TOKEN_COLUMNS = {
    "recharged": ("recharge",),
    "granted": ("grant",),
    "consumed": ("capture",),
    "released": ("release",),
    "refunded": ("refund",),
    "expired": ("expire",),
    "adjusted": ("adjustment",),
}


def check_range(first: date, last: date) -> None:
    if last < first:
        raise InvalidDateRange("'to' is before 'from'")
    if (last - first).days >= MAX_REPORT_DAYS:
        raise InvalidDateRange(f"a report covers at most {MAX_REPORT_DAYS} days")


def _usage_day(day: date, metrics: dict[str, usage.Total]) -> UsageDayOut:
    def tokens(kinds: tuple[str, ...]) -> int:
        return sum(metrics[f"ledger:{k}"].tokens for k in kinds if f"ledger:{k}" in metrics)

    def jobs(metric: str) -> int:
        total = metrics.get(metric)
        return total.count if total else 0

    seconds = sum(
        (t.seconds for m, t in metrics.items() if m.startswith("job:video:")), start=usage.ZERO
    )
    return UsageDayOut(
        day=day,
        **{column: tokens(kinds) for column, kinds in _TOKEN_COLUMNS.items()},
        images_succeeded=jobs("job:image:succeeded"),
        images_failed=jobs("job:image:failed"),
        videos_succeeded=jobs("job:video:succeeded"),
        videos_failed=jobs("job:video:failed"),
        video_seconds=float(round(seconds, 3)),
        active_users=jobs("active_users"),
    )


async def usage_report(
    session: AsyncSession, admin: AdminPrincipal, tenant_id: uuid.UUID, first: date, last: date
) -> list[UsageDayOut]:
    """Every day from ``first`` to ``last`` (UTC), days without activity included."""
    ensure_tenant_access(admin, tenant_id, write=False)
    check_range(first, last)
    await tenancy.get_tenant(session, tenant_id)
    days = await usage.daily(session, tenant_id, first, last)
    count = (last - first).days + 1
    return [
        _usage_day(day, days.get(day, {}))
        for day in (first + timedelta(days=n) for n in range(count))
    ]


def usage_csv(days: list[UsageDayOut]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(USAGE_COLUMNS)
    for d in days:
        writer.writerow([getattr(d, c) for c in USAGE_COLUMNS])
    return out.getvalue()


# -- ledger export -------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "id",
    "at",
    "user",
    "kind",
    "amount",
    "balance_after",
    "reference",
    "batch_id",
    "job_id",
)


async def check_export(
    session: AsyncSession, admin: AdminPrincipal, tenant_id: uuid.UUID, first: date, last: date
) -> None:
    """What must hold before the stream starts (an error then is still a JSON answer)."""
    ensure_tenant_access(admin, tenant_id, write=False)
    if last < first:
        raise InvalidDateRange("'to' is before 'from'")
    await tenancy.get_tenant(session, tenant_id)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


async def export_ledger(
    db: Database, tenant_id: uuid.UUID, first: date, last: date, *, batch: int = EXPORT_BATCH
) -> AsyncIterator[bytes]:
    """The CSV of the tenant's entries made from ``first`` to ``last`` (UTC days), in time
    order, ``batch`` rows per query, all from one snapshot (REPEATABLE READ, read only)."""
    start = datetime.combine(first, time(), UTC)
    end = datetime.combine(last + timedelta(days=1), time(), UTC)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    yield out.getvalue().encode()
    after_at, after_id = start - timedelta(microseconds=1), 0
    async with db.session() as session:
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        while True:
            rows = (
                await session.execute(
                    repo.EXPORT_BATCH,
                    {
                        "tenant_id": tenant_id,
                        "start": start,
                        "end": end,
                        "after_at": after_at,
                        "after_id": after_id,
                        "limit": batch,
                    },
                )
            ).all()
            if not rows:
                return
            out.seek(0)
            out.truncate()
            for r in rows:
                writer.writerow([_csv_cell(v) for v in r])
            yield out.getvalue().encode()
            after_at, after_id = rows[-1].created_at, rows[-1].id
