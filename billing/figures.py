"""A tenant's Tokens and users in figures, for the operators' overview: small reads.

- ``held_now``: the Tokens held right now, from the open holds only (``holds`` where
  ``status = 'held'``: a partial index, ``ix_holds_account_id_open``).
- ``active_users``: the users who started a swap in a range of days, from
  ``usage_active_users`` (one row per user and day, migration 0012; its primary key
  (tenant_id, day, account_id) serves the range), never the ledger.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def held_now(session: AsyncSession, tenant_id: uuid.UUID) -> int:
    result = await session.execute(
        text(
            "SELECT coalesce(sum(amount), 0) FROM holds "
            "WHERE status = 'held' AND tenant_id = :tenant_id"
        ),
        {"tenant_id": tenant_id},
    )
    return int(result.scalar_one())


async def active_users(session: AsyncSession, tenant_id: uuid.UUID, first: date, last: date) -> int:
    result = await session.execute(
        text(
            "SELECT count(DISTINCT account_id) FROM usage_active_users "
            "WHERE tenant_id = :tenant_id AND day BETWEEN :first AND :last"
        ),
        {"tenant_id": tenant_id, "first": first, "last": last},
    )
    return int(result.scalar_one())
