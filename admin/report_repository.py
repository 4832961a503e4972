"""The SQL of the reports: a tenant's users page by page, and its ledger entries for export.

Both read through indexes of migration 0012 and never more rows than a page or a batch:
the user list by ``(tenant_id, external_id COLLATE "C")`` or ``(tenant_id, created_at,
id)`` (by balance: a sort of the tenant's accounts, see ``USER_SORTS``), the export by
``ledger_entries (tenant_id, created_at, id)``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# sort name -> (the key's SQL, descending). Byte order ("C") for external ids: the same
# order and prefix ranges on every database collation, and the index of migration 0012.
# No index on balances: one would make every balance update non-HOT, on the money path.
USER_SORTS: dict[str, tuple[str, bool]] = {
    "external_id": ('u.external_id COLLATE "C"', False),
    "created_at": ("u.created_at", False),
    "-created_at": ("u.created_at", True),
    "balance": ("a.balance", False),
    "-balance": ("a.balance", True),
}


@dataclass(frozen=True)
class UserListRow:
    id: int
    external_id: str
    email: str | None
    display_name: str | None
    created_at: datetime
    balance: int
    held: int
    status: str
    plan: str | None = None


async def list_users(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    prefix: str | None,
    status: str | None,
    sort: str,
    after: tuple[Any, int] | None,
    limit: int,
    plan: str | None = None,
) -> list[UserListRow]:
    """A page of the tenant's users (with their accounts) in ``sort`` order, after the
    (key, user id) of the previous page's last one. The SQL names only the filters in use,
    so that each shape gets its own plan and index."""
    key, descending = USER_SORTS[sort]
    if key == "a.balance" and not prefix:
        return await _by_balance(session, tenant_id, status, descending, after, limit)
    where = ["u.tenant_id = :tenant_id"]
    params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit}
    if prefix:
        # A range the index serves, and starts_with for exactness at its end.
        where.append(
            'u.external_id COLLATE "C" >= :prefix '
            'AND u.external_id COLLATE "C" < :prefix || chr(1114111) '
            "AND starts_with(u.external_id, :prefix)"
        )
        params["prefix"] = prefix
    if status:
        where.append("a.status = :status")
        params["status"] = status
    if plan:
        where.append("p.name = :plan")
        params["plan"] = plan
    if after is not None:
        where.append(f"({key}, u.id) {'<' if descending else '>'} (:after_key, :after_id)")
        params["after_key"], params["after_id"] = after
    direction = "DESC" if descending else ""
    rows = await session.execute(
        text(
            "SELECT u.id, u.external_id, u.email, u.display_name, u.created_at, a.balance, "
            "a.held, a.status, p.name FROM users u JOIN accounts a ON a.user_id = u.id "
            f"{'' if plan else 'LEFT '}JOIN plans p ON p.id = u.plan_id "
            f"WHERE {' AND '.join(where)} "
            f"ORDER BY {key} {direction}, u.id {direction} LIMIT :limit"
        ),
        params,
    )
    return [UserListRow(*r) for r in rows]


async def _by_balance(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    status: str | None,
    descending: bool,
    after: tuple[Any, int] | None,
    limit: int,
) -> list[UserListRow]:
    """A page by balance without a prefix: the page is picked among the tenant's accounts
    first (a top-N sort in memory, the LIMIT right above it), then joined to its users. A
    LIMIT above the join would sort all the tenant's rows in full (on disk past work_mem):
    about five times slower at 100,000 users."""
    where = ["tenant_id = :tenant_id", "kind = 'user'"]
    params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit}
    if status:
        where.append("status = :status")
        params["status"] = status
    if after is not None:
        where.append(f"(balance, user_id) {'<' if descending else '>'} (:after_key, :after_id)")
        params["after_key"], params["after_id"] = after
    direction = "DESC" if descending else ""
    rows = await session.execute(
        text(
            "SELECT u.id, u.external_id, u.email, u.display_name, u.created_at, a.balance, "
            "a.held, a.status FROM (SELECT user_id, balance, held, status FROM accounts "
            f"WHERE {' AND '.join(where)} "
            f"ORDER BY balance {direction}, user_id {direction} LIMIT :limit) a "
            "JOIN users u ON u.id = a.user_id "
            f"ORDER BY a.balance {direction}, u.id {direction}"
        ),
        params,
    )
    return [UserListRow(*r) for r in rows]


# The user of an entry is the user account on either side (memo entries: both).
EXPORT_BATCH = text(
    """
    SELECT e.id, e.created_at, u.external_id AS user, e.kind, e.amount, e.balance_after,
           e.reference, e.batch_id,
           CASE WHEN starts_with(coalesce(h.reference, e.reference), 'job:')
                THEN substr(coalesce(h.reference, e.reference), 5) END AS job_id
    FROM ledger_entries e
    LEFT JOIN accounts ta ON ta.id = e.to_account_id
    LEFT JOIN accounts fa ON fa.id = e.from_account_id
    LEFT JOIN users u ON u.id = coalesce(ta.user_id, fa.user_id)
    LEFT JOIN holds h ON h.id = e.hold_id
    WHERE e.tenant_id = :tenant_id AND e.created_at >= :start AND e.created_at < :end
      AND (e.created_at, e.id) > (:after_at, :after_id)
    ORDER BY e.created_at, e.id
    LIMIT :limit
    """
)
