"""A tenant's Tokens and users in figures, for the operators' overview: small reads.

- ``held_now``: the Tokens held right now, from the open holds only (``holds`` where
  ``status = 'held'``: a partial index, ``ix_holds_account_id_open``).
- ``active_users_since``: the users who started a swap on a day since ``first`` (up to
  today), from ``usage_last_active`` (one row per user: their last active day, migration
  0019; index (tenant_id, day)), never the ledger.
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


async def active_users_since(session: AsyncSession, tenant_id: uuid.UUID, first: date) -> int:
    result = await session.execute(
        text(
            "SELECT count(*) FROM usage_last_active WHERE tenant_id = :tenant_id AND day >= :first"
        ),
        {"tenant_id": tenant_id, "first": first},
    )
    return int(result.scalar_one())
