"""The Token ledger: every movement of Tokens, as immutable double-entry rows.

Accounts. Each tenant has two system accounts, ``issuance`` (where bought and granted
Tokens come from, so it goes negative) and ``revenue`` (where spent Tokens go), and one
account per end user with ``balance`` and ``held`` (``available = balance - held``). Every
entry moves ``amount > 0`` from one account to another, so the balances of a tenant always
sum to zero and each balance is ``sum(in) - sum(out)`` over the entries.

Kinds and their direction::

    recharge, grant, +adjustment   issuance -> user
    expire, -adjustment            user -> issuance
    capture                        user -> revenue
    refund                         revenue -> user
    hold, release                  user -> user   (memo entries)

Holds are memo entries. A hold reserves Tokens for a job without moving them, so it is
written as an entry from the user account to itself: it cannot change any balance (in and
out cancel), and it changes ``held`` by +amount. A release is the same with -amount. A
capture is a real transfer user -> revenue that also ends the reservation of what it
captures. So ``held = sum(hold) - sum(release) - sum(capture)`` per account, and both
numbers are recomputable from the entries alone (``billing/verify.py`` does exactly that).
We chose memo entries over an escrow account because ``balance`` then keeps meaning "Tokens
the user owns", which is what the contract shows, and verify needs no special case.

Every balance change is one SQL statement (see ``billing/repository.py``, and
``billing/hold_repository.py`` for holds) that cannot
overdraw under concurrency, writes its ledger entry in the same statement, and is
idempotent: recharge, grant, adjustment and refund by ``idempotency_key`` (unique per
tenant and kind), hold by its ``reference`` (one hold per reference and tenant), capture and
release by the hold's state machine. A replay returns the original result with
``replayed=True``; the same key used for a different movement gets IdempotencyKeyReused.

Frozen accounts accept no holds, recharges, grants or adjustments (either sign) until
unfrozen. Holds taken before the freeze still settle (capture/release), so an in-flight job
does not leave Tokens stuck, and refunds still go through: that is money we owe back.

Grant expiry. A grant with ``expires_at`` also records a lot in ``token_grants`` with
``remaining``. Spending (capture, negative adjustment) consumes unspent lots soonest-
expiring first, before any bought Tokens, which is the order most favourable to the user.
``expire_grants`` moves each expired lot's ``remaining`` back to issuance through an
``expire`` entry, except what the account's holds cover: a job that holds Tokens may still
capture them, and its capture would spend the expired lots first, so the holds cover those
lots before any bought Tokens. (The outcome is the same whether a job's capture comes
before the expiry pass or after it.) A later pass takes the covered rest once the hold is
released. Refunds come back as ordinary Tokens.

Holds (hold, capture, release, refund: how a swap's Tokens are spent) are in
``billing/holds.py``; this module has the accounts, the movements between a user and the
tenant's issuance account, and grant expiry.

Services flush nothing themselves and never commit: the caller's transaction does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import (
    AccountFrozen,
    AppError,
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidAmount,
    NotFound,
)
from billing import metrics
from billing import repository as repo

MAX_AMOUNT = 10**12  # settings.max_amount's default; a sanity bound on one movement


@dataclass(frozen=True)
class Expiring:
    """Granted Tokens not spent yet that expire at ``expires_at`` (one campaign's lots)."""

    amount: int
    expires_at: datetime
    label: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"amount": self.amount, "expires_at": self.expires_at, "label": self.label}


@dataclass(frozen=True)
class AccountView:
    balance: int
    held: int
    available: int
    status: str
    expiring: tuple[Expiring, ...] = ()


@dataclass(frozen=True)
class Movement:
    """The outcome of one recharge, grant, adjustment or refund."""

    entry_id: int
    kind: str
    amount: int  # signed, from the user's side
    account_id: int
    balance_after: int
    held_after: int
    at: datetime
    replayed: bool = False


@dataclass(frozen=True)
class ExpiryResult:
    grants: int
    tokens: int


# ---------------------------------------------------------------------------------------
# Accounts
# ---------------------------------------------------------------------------------------


async def open_tenant_accounts(session: AsyncSession, tenant_id: uuid.UUID) -> None:
    """Create the tenant's issuance and revenue accounts; a no-op when they exist."""
    await repo.open_tenant_accounts(session, tenant_id)


async def open_user_accounts(
    session: AsyncSession, tenant_id: uuid.UUID, user_ids: Sequence[int]
) -> None:
    """One account per user (set-based); users that already have one are skipped."""
    if user_ids:
        await repo.open_user_accounts(session, tenant_id, user_ids)


async def freeze_account(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: int, reason: str
) -> None:
    if not await repo.set_account_status(session, tenant_id, user_id, "frozen", reason):
        raise NotFound("This user has no Token account")


async def unfreeze_account(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: int, reason: str
) -> None:
    # The reason of an unfreeze lives in the audit log; the account keeps no stale reason.
    del reason
    if not await repo.set_account_status(session, tenant_id, user_id, "active", None):
        raise NotFound("This user has no Token account")


async def account_view(session: AsyncSession, user_id: int) -> AccountView:
    row = await repo.account_of_user(session, user_id)
    if row is None:
        raise NotFound("This user has no Token account")
    lots = await repo.expiring_lots(session, row.id)
    return AccountView(
        balance=row.balance,
        held=row.held,
        available=row.balance - row.held,
        status=row.status,
        expiring=tuple(Expiring(int(x.amount), x.expires_at, x.label) for x in lots),
    )


# ---------------------------------------------------------------------------------------
# Movements between a user and the tenant's issuance account
# ---------------------------------------------------------------------------------------


def check_amount(amount: Any, *, allow_zero: bool = False) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidAmount("Token amounts are integers")
    low = 0 if allow_zero else 1
    if not low <= amount <= MAX_AMOUNT:
        raise InvalidAmount(f"Token amount must be between {low} and {MAX_AMOUNT}")
    return amount


async def recharge(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: int,
    amount: int,
    *,
    idempotency_key: str | None = None,
    operator: str | None = None,
    reason: str | None = None,
    reference: str | None = None,
) -> Movement:
    """Credit bought Tokens to a user (issuance -> user)."""
    return await _credit(
        session,
        tenant_id,
        user_id,
        check_amount(amount),
        kind="recharge",
        idempotency_key=idempotency_key,
        operator=operator,
        reason=reason,
        reference=reference,
    )


async def grant(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: int,
    amount: int,
    *,
    expires_at: datetime | None = None,
    label: str | None = None,
    idempotency_key: str | None = None,
    operator: str | None = None,
    reason: str | None = None,
) -> Movement:
    """Credit free Tokens; with ``expires_at``, what is unspent then goes back (an
    ``expire`` entry); ``label`` names the campaign on the lot."""
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidAmount("expires_at must carry a time zone")
    return await _credit(
        session,
        tenant_id,
        user_id,
        check_amount(amount),
        kind="grant",
        idempotency_key=idempotency_key,
        operator=operator,
        reason=reason,
        reference=None,
        expires_at=expires_at,
        label=label,
    )


async def adjust(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: int,
    amount: int,
    *,
    reason: str,
    operator: str,
    idempotency_key: str | None = None,
) -> Movement:
    """An operator's correction: positive credits the user, negative debits them."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
        raise InvalidAmount("An adjustment is a non-zero integer")
    if not reason or not operator:
        raise InvalidAmount("An adjustment needs a reason and an operator")
    if amount > 0:
        return await _credit(
            session,
            tenant_id,
            user_id,
            check_amount(amount),
            kind="adjustment",
            idempotency_key=idempotency_key,
            operator=operator,
            reason=reason,
            reference=None,
        )
    return await _debit(
        session,
        tenant_id,
        user_id,
        check_amount(-amount),
        kind="adjustment",
        idempotency_key=idempotency_key,
        operator=operator,
        reason=reason,
    )


def _params(
    tenant_id: uuid.UUID, user_id: int, amount: int, kind: str, system_kind: str, **extra: Any
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "user_id": user_id,
        "amount": amount,
        "kind": kind,
        "system_kind": system_kind,
        "reference": None,
        "operator": None,
        "reason": None,
        "idempotency_key": None,
        **extra,
    }


async def _credit(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: int,
    amount: int,
    *,
    kind: str,
    idempotency_key: str | None,
    operator: str | None,
    reason: str | None,
    reference: str | None,
    expires_at: datetime | None = None,
    label: str | None = None,
) -> Movement:
    params = _params(
        tenant_id,
        user_id,
        amount,
        kind,
        "issuance",
        reference=reference,
        operator=operator,
        reason=reason,
        idempotency_key=idempotency_key,
    )
    statement = repo.CREDIT_USER
    if expires_at is not None:
        statement = repo.GRANT_WITH_EXPIRY
        params.update(expires_at=expires_at, label=label)
    row = await _run_with_system_account(session, statement, params)
    if row.entry_id is not None:
        metrics.tokens_moved(session, tenant_id, kind, amount)
        return Movement(
            row.entry_id,
            kind,
            amount,
            row.account_id,
            row.balance_after,
            row.held_after,
            row.created_at,
        )
    replay = await movement_replay(
        session, tenant_id, kind, idempotency_key, row.account_id, amount, credit=True
    )
    if replay is not None:
        return replay
    raise AccountFrozen("This Token account is frozen")


async def _debit(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: int,
    amount: int,
    *,
    kind: str,
    idempotency_key: str | None,
    operator: str | None,
    reason: str | None,
) -> Movement:
    params = _params(
        tenant_id,
        user_id,
        amount,
        kind,
        "issuance",
        operator=operator,
        reason=reason,
        idempotency_key=idempotency_key,
    )
    row = await _run_with_system_account(session, repo.DEBIT_USER, params)
    if row.entry_id is not None:
        await session.execute(repo.CONSUME_GRANTS, {"account_id": row.account_id, "amount": amount})
        metrics.tokens_moved(session, tenant_id, kind, amount)
        return Movement(
            row.entry_id,
            kind,
            -amount,
            row.account_id,
            row.balance_after,
            row.held_after,
            row.created_at,
        )
    replay = await movement_replay(
        session, tenant_id, kind, idempotency_key, row.account_id, amount, credit=False
    )
    if replay is not None:
        return replay
    raise refused(row.status, row.available, amount)


def refused(status: str, available: int, amount: int) -> AppError:
    """Why ``amount`` could not be spent (a debit, a hold) from an account it found in
    ``status`` with ``available`` Tokens: AccountFrozen (403) or InsufficientBalance (402,
    with what was available)."""
    if status != "active":
        return AccountFrozen("This Token account is frozen")
    return InsufficientBalance(
        f"{amount} Tokens needed, {available} available",
        details={"available": available, "needed": amount},
    )


async def _run_with_system_account(
    session: AsyncSession, statement: Any, params: dict[str, Any]
) -> Any:
    row = await repo.run(session, statement, params)
    if row is None:
        raise NotFound("This user has no Token account")
    if row.system_account_id is None:
        # A tenant created before its system accounts existed: open them, then retry once.
        await repo.open_tenant_accounts(session, params["tenant_id"])
        row = await repo.run(session, statement, params)
        assert row is not None and row.system_account_id is not None
    return row


async def movement_replay(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    kind: str,
    idempotency_key: str | None,
    account_id: int,
    amount: int,
    *,
    credit: bool,
) -> Movement | None:
    """The entry an earlier call with this key wrote, or None when there is none."""
    if idempotency_key is None:
        return None
    entry = await repo.run(
        session,
        repo.ENTRY_BY_KEY,
        {"tenant_id": tenant_id, "kind": kind, "idempotency_key": idempotency_key},
    )
    if entry is None:
        return None
    user_side = entry.to_account_id if credit else entry.from_account_id
    if user_side != account_id or entry.amount != amount:
        raise IdempotencyKeyReused("This idempotency key was already used for a different movement")
    signed = entry.amount if credit else -entry.amount
    return Movement(
        entry.id,
        kind,
        signed,
        account_id,
        entry.balance_after,
        entry.held_after,
        entry.created_at,
        replayed=True,
    )


# ---------------------------------------------------------------------------------------
# Grant expiry
# ---------------------------------------------------------------------------------------


async def expire_grants(session: AsyncSession, now: datetime, *, limit: int = 5000) -> ExpiryResult:
    """Move the unspent part of every grant lot expired by ``now`` back to issuance.

    Handles up to ``limit`` accounts per call (call again while it returns grants > 0).
    One runner at a time across processes (an advisory lock): when another one is busy,
    this returns at once with nothing done.
    """
    locked = await repo.run(session, repo.EXPIRY_LOCK, {})
    if locked is None or not locked[0]:
        return ExpiryResult(0, 0)
    row = await repo.run(session, repo.EXPIRE_GRANTS, {"now": now, "limit": limit})
    assert row is not None
    moved = row.moved if isinstance(row.moved, list) else orjson.loads(row.moved)
    tokens = 0
    for tenant, amount in moved:
        metrics.tokens_moved(session, tenant, "expire", int(amount))
        tokens += int(amount)
    return ExpiryResult(grants=row.grants, tokens=tokens)
