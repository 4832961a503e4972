"""Holds: how a swap's Tokens are held, captured (part or all, the rest released), released
and refunded. Every statement is in ``billing/hold_repository.py``; this module runs
them and says what their answers mean.

A swap holds its Tokens in the statement that queues its job (``hold_with``) and settles
them in the statement that finishes it (``capture_with``). The job's SQL comes from
``app/jobs`` as the text of one CTE of that statement; ``hold_repository.held_with`` and
``captured_with`` build the statement around it (once per process), and these functions
run it. Why not the reverse (billing's SQL pasted into the jobs' statements, as before):
a reader looking for where a swap's Tokens move lands here, and billing keeps the money
side whole (the SQL that moves ``balance`` and ``held``, the grants a capture spends, the
counts, why a hold is refused), while a swap keeps its one round trip for the job and
its hold, and the single statement that makes them succeed or fail together.
``hold`` and ``capture`` are the same paths without a job (operators, tests); ``release``
gives a whole hold back (a canceled or abandoned job).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import TextClause
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.errors import (
    AppError,
    Conflict,
    IdempotencyKeyReused,
    InvalidAmount,
    NotFound,
)
from billing import hold_repository as hold_repo
from billing import metrics, pricing
from billing import repository as repo
from billing.service import Movement, check_amount, movement_replay, refused


@dataclass(frozen=True)
class HoldView:
    id: int
    reference: str
    account_id: int
    amount: int
    captured: int
    released: int
    refunded: int
    status: str  # held | captured | released
    price_version: int | None
    multiplier: Decimal  # the peak multiplier ``amount`` was priced at (1: none)
    balance: int  # the user account right after the call
    held: int
    replayed: bool = False


@dataclass(frozen=True)
class Settlement:
    """What a capture statement did to the hold (``capture_with``)."""

    hold_id: int | None  # None: no hold was settled (none was held under that reference)
    account_id: int | None
    captured: int
    released: int


# -- hold ------------------------------------------------------------------------------------


async def hold(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: int,
    reference: str,
    amount: int,
    *,
    price_version: int | None = None,
    multiplier: Decimal = pricing.NO_MULTIPLIER,
    operator: str | None = None,
) -> HoldView:
    """Reserve ``amount`` Tokens for ``reference`` (a job id): one hold per reference.

    InsufficientBalance (402) when fewer are available, AccountFrozen (403) when frozen.
    Holding the same reference again returns the existing hold.
    """
    _check_reference(reference)
    amount = check_amount(amount)
    row = await _held(
        session,
        hold_repo.HOLD,
        {
            "tenant_id": tenant_id,
            "user_id": user_id,
            "reference": reference,
            "amount": amount,
            "price_version": price_version,
            "multiplier": multiplier,
            "operator": operator,
        },
    )
    if row is None:
        raise NotFound("This user has no Token account")
    if row.hold_id is not None:
        return HoldView(
            row.hold_id,
            reference,
            row.account_id,
            amount,
            0,
            0,
            0,
            "held",
            price_version,
            multiplier,
            row.balance,
            row.held,
        )
    existing = await _hold_by_reference(session, tenant_id, reference)
    if existing is not None:
        if existing.account_id != row.account_id or existing.amount != amount:
            raise IdempotencyKeyReused("This reference already holds a different amount")
        return _replayed(existing)
    raise _refused(row, amount)


async def hold_with(
    executor: AsyncSession | AsyncConnection,
    record: str,
    columns: str,
    params: dict[str, Any],
    *,
    tenant_id: uuid.UUID,
    user_id: int,
    reference: str,
    amount: int,
    price_version: int,
    multiplier: Decimal,
) -> Any | None:
    """Hold ``amount`` for ``reference`` and write the caller's ``record`` (a swap's job),
    in one statement (``hold_repository.held_with``: ``record`` is the body of a CTE that
    selects FROM h, ``columns`` what to answer of it, ``params`` its own parameters).
    ``multiplier`` is the peak multiplier ``amount`` was priced at (recorded on the hold).
    Its row (the record's ``columns``) once both are written; None when the
    tenant's price book is no longer at ``price_version`` (nothing written: price again).
    NotFound without a Token account; AccountFrozen or InsufficientBalance when refused.
    """
    row = await _held(
        executor,
        hold_repo.held_with(record, columns),
        {
            **params,
            "tenant_id": tenant_id,
            "user_id": user_id,
            "reference": reference,
            "amount": amount,
            "price_version": price_version,
            "multiplier": multiplier,
            "operator": None,
        },
    )
    assert row is not None  # held_with answers one row, whatever happened
    if row.current_price_version != price_version:
        return None
    if row.account_id is None:
        raise NotFound("This user has no Token account")
    if row.hold_id is None:
        raise _refused(row, amount)
    return row


async def _held(
    executor: AsyncSession | AsyncConnection, statement: TextClause, params: dict[str, Any]
) -> Any | None:
    """Run a hold statement (``hold_ctes``, answering ``HOLD_OUTCOME``); a hold made is
    counted (and a hold at a peak multiplier too)."""
    row = (await executor.execute(statement, params)).first()
    if row is not None and row.hold_id is not None:
        metrics.tokens_moved(executor, params["tenant_id"], "hold", params["amount"])
        if params["multiplier"] > pricing.NO_MULTIPLIER:
            metrics.held_at_peak(executor, params["tenant_id"], params["amount"])
    return row


def _refused(row: Any, amount: int) -> AppError:
    """Why a hold statement (``hold_repository.HOLD_OUTCOME``) made no hold, for an account
    it found."""
    return refused(row.account_status, row.available, amount)


# -- capture ---------------------------------------------------------------------------------


async def capture(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    reference: str,
    amount: int,
    *,
    operator: str | None = None,
) -> HoldView:
    """Charge ``amount`` (0..held) of the hold; the rest of it is released.

    Capturing a settled hold again with the same amount returns it unchanged.
    """
    amount = check_amount(amount, allow_zero=True)
    row = await _settled(
        session,
        hold_repo.CAPTURE,
        {
            "tenant_id": tenant_id,
            "reference": reference,
            "amount": amount,
            "operator": operator,
            "reason": None,
        },
    )
    if row is not None:
        return _hold_view(row)
    existing = await _hold_by_reference(session, tenant_id, reference)
    if existing is None:
        raise NotFound(f"No hold for reference {reference!r}")
    if existing.status == "held":
        raise InvalidAmount(f"Cannot capture {amount}: the hold is of {existing.amount}")
    if existing.captured == amount:
        return _replayed(existing)
    raise Conflict(f"The hold for {reference!r} is already {existing.status}")


async def capture_with(
    session: AsyncSession,
    record: str,
    columns: str,
    params: dict[str, Any],
    *,
    tenant_id: uuid.UUID,
    reference: str | None,
    amount: int,
    reason: str | None,
) -> tuple[Any, Settlement] | None:
    """Write the caller's ``record`` (a swap's job, finished) and, when it wrote a row,
    capture ``amount`` of the hold ``reference`` (0: release it all, ``reason`` on the
    release), in one statement (``hold_repository.captured_with``: ``record`` is the body
    of a data-modifying CTE, ``columns`` what to answer of it, ``params`` its own
    parameters). None when the record matched no row (nothing written);
    otherwise its row and what became of the hold (nothing, without a hold still held
    under ``reference``: the caller decides whether that may be).
    """
    row = await _settled(
        session,
        hold_repo.captured_with(record, columns),
        {
            **params,
            "tenant_id": tenant_id,
            "reference": reference,
            "amount": amount,
            "operator": None,
            "reason": reason,
        },
    )
    if row is None:
        return None
    settled = Settlement(
        row.hold_id, row.hold_account_id, row.hold_captured or 0, row.hold_released or 0
    )
    return row, settled


async def _settled(session: AsyncSession, statement: TextClause, params: dict[str, Any]) -> Any:
    """Run a capture statement (``capture_ctes``, answering ``SETTLED``) and, when it
    settled a hold, the rest of it in its transaction: the captured Tokens are taken from
    the account's grants, soonest to expire first (a statement of its own, run once the
    account is locked, so it sees every grant), and the movements are counted."""
    row = (await session.execute(statement, params)).first()
    if row is not None and row.hold_id is not None:
        tenant_id, captured, released = params["tenant_id"], row.hold_captured, row.hold_released
        if captured:
            await session.execute(
                repo.CONSUME_GRANTS, {"account_id": row.hold_account_id, "amount": captured}
            )
            metrics.tokens_moved(session, tenant_id, "capture", captured)
        if released:
            metrics.tokens_moved(session, tenant_id, "release", released)
    return row


# -- release, refund, read -------------------------------------------------------------------


async def release(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    reference: str,
    *,
    operator: str | None = None,
    reason: str | None = None,
) -> HoldView:
    """Give the whole hold back; releasing a released hold again returns it unchanged."""
    row = await repo.run(
        session,
        hold_repo.RELEASE,
        {
            "tenant_id": tenant_id,
            "reference": reference,
            "operator": operator,
            "reason": reason,
        },
    )
    if row is not None:
        metrics.tokens_moved(session, tenant_id, "release", row.released)
        return _hold_view(row)
    view = await _hold_by_reference(session, tenant_id, reference)
    if view is None:
        raise NotFound(f"No hold for reference {reference!r}")
    if view.status == "released" and view.captured == 0:
        return _replayed(view)
    raise Conflict(f"The hold for {reference!r} is already {view.status}")


async def refund(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    reference: str,
    amount: int,
    *,
    idempotency_key: str | None = None,
    operator: str | None = None,
    reason: str | None = None,
) -> Movement:
    """Give back up to what the hold for ``reference`` captured (revenue -> user)."""
    amount = check_amount(amount)
    row = await repo.run(
        session,
        hold_repo.REFUND,
        {
            "tenant_id": tenant_id,
            "reference": reference,
            "amount": amount,
            "idempotency_key": idempotency_key,
            "operator": operator,
            "reason": reason,
        },
    )
    if row is None:
        existing = await _hold_by_reference(session, tenant_id, reference)
        if existing is None:
            raise NotFound(f"No hold for reference {reference!r}")
        raise Conflict(f"The hold for {reference!r} captured nothing to refund")
    if row.entry_id is not None:
        metrics.tokens_moved(session, tenant_id, "refund", amount)
        return Movement(
            row.entry_id,
            "refund",
            amount,
            row.account_id,
            row.balance_after,
            row.held_after,
            row.created_at,
        )
    replay = await movement_replay(
        session, tenant_id, "refund", idempotency_key, row.account_id, amount, credit=True
    )
    if replay is not None:
        return replay
    left = row.captured - row.refunded_before
    raise InvalidAmount(f"Cannot refund {amount}: {left} of the capture is left to refund")


def _check_reference(reference: str) -> None:
    if not isinstance(reference, str) or not 1 <= len(reference) <= 255:
        raise InvalidAmount("A hold reference is 1 to 255 characters")


async def _hold_by_reference(
    session: AsyncSession, tenant_id: uuid.UUID, reference: str
) -> HoldView | None:
    row = await repo.run(
        session, hold_repo.HOLD_BY_REFERENCE, {"tenant_id": tenant_id, "reference": reference}
    )
    return None if row is None else _hold_view(row)


def _hold_view(row: Any) -> HoldView:
    """A row of hold_repository._HOLD_VIEW's columns (CAPTURE, RELEASE, HOLD_BY_REFERENCE)."""
    return HoldView(
        row.id,
        row.reference,
        row.account_id,
        row.amount,
        row.captured,
        row.released,
        row.refunded,
        row.status,
        row.price_version,
        row.multiplier,
        row.balance,
        row.held,
    )


def _replayed(view: HoldView) -> HoldView:
    return HoldView(**{**view.__dict__, "replayed": True})


async def get_hold(session: AsyncSession, tenant_id: uuid.UUID, reference: str) -> HoldView:
    view = await _hold_by_reference(session, tenant_id, reference)
    if view is None:
        raise NotFound(f"No hold for reference {reference!r}")
    return view
