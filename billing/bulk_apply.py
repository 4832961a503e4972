"""Applying a bulk recharge with set-based SQL, whatever its size.

Three statements: resolve external ids and lock their accounts in id order (one
SELECT ... FOR UPDATE over ``unnest``), then one statement that credits every account,
writes one ledger entry per user and debits the tenant's issuance account once. Two
batches touching the same users lock them in the same order, so they queue instead of
deadlocking.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AccountFrozen, AppError, UserNotFound
from billing import bulk_repository as bulk_repo
from billing import metrics
from billing import repository as repo
from billing.bulk_entries import failure


@dataclass
class Checked:
    """The entries that can be credited (in account id order) and those that cannot."""

    accounts: list[int] = field(default_factory=list)
    amounts: list[int] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


async def check_accounts(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    wanted: Mapping[str, tuple[int | None, int]],
    *,
    apply: bool = True,
) -> Checked:
    """Split the ``wanted`` users into good and failed; when ``apply``, their accounts are
    locked (id order) for the credit that follows. ``apply=False`` is a preview: the same
    rules, no lock and nothing written (a user without an account yet counts as good: the
    real batch opens the account)."""
    checked = Checked()
    if not wanted:
        return checked
    names = list(wanted)
    rows = await _resolve(session, tenant_id, names, lock=apply)
    if len(rows) < len(names):
        # Usually unknown users; but a user without an account gets one, then we look again.
        missing = [n for n in names if n not in rows]
        result = await session.execute(
            bulk_repo.USERS_WITHOUT_ACCOUNT, {"tenant_id": tenant_id, "external_ids": missing}
        )
        accountless = result.all()
        if accountless and apply:
            await repo.open_user_accounts(session, tenant_id, [r.id for r in accountless])
            rows = await _resolve(session, tenant_id, names, lock=True)
        elif accountless:
            rows.update({r.external_id: (0, "active") for r in accountless})

    good: list[tuple[int, int, str]] = []
    for user, (index, amount) in wanted.items():
        found = rows.get(user)
        if found is None:
            checked.failures.append(
                failure(
                    index, user, UserNotFound.code, "No user with this external id in the tenant"
                )
            )
        elif found[1] != "active":
            checked.failures.append(
                failure(index, user, AccountFrozen.code, "This user's Token account is frozen")
            )
        else:
            good.append((found[0], amount, user))
    good.sort()
    checked.accounts = [g[0] for g in good]
    checked.amounts = [g[1] for g in good]
    checked.users = [g[2] for g in good]
    return checked


async def _resolve(
    session: AsyncSession, tenant_id: uuid.UUID, names: Sequence[str], *, lock: bool
) -> dict[str, tuple[int, str]]:
    """external id -> (account id, status), the accounts locked in id order when ``lock``."""
    rows = await bulk_repo.resolve_accounts(session, tenant_id, list(names), lock=lock)
    return {r[0]: (r[1], r[2]) for r in rows}


async def credit(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    batch_id: uuid.UUID,
    checked: Checked,
    *,
    reason: str | None,
    operator: str | None,
    expires_at: datetime | None = None,
    label: str | None = None,
) -> tuple[int, int]:
    """Credit the checked accounts and debit the tenant's issuance account, in one
    statement; returns (accounts credited, Tokens credited). With ``expires_at`` the
    credits are grants: each records its lot (``label`` its campaign), as a single
    ``service.grant`` does, for the expiry pass to take back what is left then."""
    if not checked.accounts:
        return 0, 0
    issuance = await repo.run(
        session, bulk_repo.SYSTEM_ACCOUNT, {"tenant_id": tenant_id, "kind": "issuance"}
    )
    if issuance is None:
        await repo.open_tenant_accounts(session, tenant_id)
        issuance = await repo.run(
            session, bulk_repo.SYSTEM_ACCOUNT, {"tenant_id": tenant_id, "kind": "issuance"}
        )
        assert issuance is not None
    row = await bulk_repo.bulk_credit(
        session,
        tenant_id=tenant_id,
        issuance_id=issuance.id,
        batch_id=batch_id,
        account_ids=checked.accounts,
        amounts=checked.amounts,
        reason=reason,
        operator=operator,
        expires_at=expires_at,
        label=label,
    )
    # The accounts are locked and were checked active under the lock: all must be credited.
    if row["credited"] != len(checked.accounts):
        raise AppError("Bulk recharge credited fewer accounts than it locked")
    kind = "recharge" if expires_at is None else "grant"
    metrics.tokens_moved(session, tenant_id, kind, int(row["total"]))
    return int(row["credited"]), int(row["total"])
