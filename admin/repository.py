"""The queries of the admin API: the audit log (appends live in ``app/core/audit.py``), users."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

AUDIT_COLUMNS = (
    "id, at, actor_id, actor, actor_ip, request_id, action, tenant_id, target, details, "
    "prev_hash, hash"
)


async def list_audit_records(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID | None,
    action: str | None,
    since: datetime | None,
    before_id: int | None,
    limit: int,
    actor: str | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Newest first, keyset-paginated by id. ``action`` ending in '*' matches a prefix;
    ``actor`` is the acting admin's email (any case); ``until`` excludes that instant."""
    action_prefix = action[:-1] if action and action.endswith("*") else None
    exact_action = None if action_prefix is not None else action
    rows = await session.execute(
        text(
            f"SELECT {AUDIT_COLUMNS} FROM audit_log "
            "WHERE (CAST(:tenant_id AS uuid) IS NULL OR tenant_id = :tenant_id) "
            "AND (CAST(:action AS text) IS NULL OR action = :action) "
            "AND (CAST(:action_prefix AS text) IS NULL OR starts_with(action, :action_prefix)) "
            "AND (CAST(:since AS timestamptz) IS NULL OR at >= :since) "
            "AND (CAST(:until AS timestamptz) IS NULL OR at < :until) "
            "AND (CAST(:actor AS text) IS NULL OR lower(actor) = lower(:actor)) "
            "AND (CAST(:before_id AS bigint) IS NULL OR id < :before_id) "
            "ORDER BY id DESC LIMIT :limit"
        ),
        {
            "tenant_id": tenant_id,
            "action": exact_action,
            "action_prefix": action_prefix,
            "since": since,
            "until": until,
            "actor": actor,
            "before_id": before_id,
            "limit": limit,
        },
    )
    return [dict(r._mapping) for r in rows]


async def external_id_of_user(session: AsyncSession, user_id: int) -> str | None:
    row = await session.execute(
        text("SELECT external_id FROM users WHERE id = :user_id"), {"user_id": user_id}
    )
    return row.scalar_one_or_none()


async def external_ids_of_users(session: AsyncSession, user_ids: set[int]) -> dict[int, str]:
    """User id -> external id, for the users of a page (one primary-key lookup each)."""
    if not user_ids:
        return {}
    rows = await session.execute(
        text("SELECT id, external_id FROM users WHERE id = ANY(:ids)"), {"ids": list(user_ids)}
    )
    return {r.id: r.external_id for r in rows}
