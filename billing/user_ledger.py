"""A user's ledger, newest first, a page at a time, each amount signed from the user's side:
what ``GET /api/v1/ledger`` answers its user and the dashboard's user page shows.

Pages go back by entry id (``before``), through the ledger's ``(to_account_id, id)`` and
``(from_account_id, id)`` indexes: a deep page costs what the first one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billing import repository as repo

MAX_ENTRY_ID = 2**63 - 1


@dataclass(frozen=True)
class LedgerLine:
    id: int
    at: datetime
    kind: str
    amount: int  # signed: + Tokens in (or released), - Tokens out (or held)
    balance_after: int
    held_after: int
    reference: str | None


@dataclass(frozen=True)
class LedgerPage:
    items: list[LedgerLine]
    next_cursor: str | None  # the last entry's id: pass it back as ``before``


def signed(row: Any, account_id: int) -> int:
    if row.kind == "hold":
        return -row.amount
    if row.kind == "release":
        return row.amount
    return row.amount if row.to_account_id == account_id else -row.amount


async def page(
    session: AsyncSession, user_id: int, *, before: int | None, limit: int
) -> LedgerPage:
    """The user's entries older than entry ``before`` (None: the newest), ``limit`` of
    them; a user without a Token account has none."""
    account = await repo.account_of_user(session, user_id)
    if account is None:
        return LedgerPage([], None)
    start = MAX_ENTRY_ID if before is None else before
    rows = await repo.user_ledger_page(session, account.id, start, limit + 1)
    items = [
        LedgerLine(
            id=r.id,
            at=r.created_at,
            kind=r.kind,
            amount=signed(r, account.id),
            balance_after=r.balance_after,
            held_after=r.held_after,
            reference=r.reference,
        )
        for r in rows[:limit]
    ]
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return LedgerPage(items, next_cursor)
