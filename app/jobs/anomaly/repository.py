"""Every SQL statement of the anomaly rules: a tenant's rules, the flags, what a breach
needs to know about the user and the tenant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

RULE_COLUMNS = (
    "tenant_id, max_requests_per_minute, max_same_source_per_hour, max_tokens_per_day, "
    "action, version, updated_at"
)
FLAG_COLUMNS = (
    'f.id, f.tenant_id, f.user_id, u.external_id, f.rule, f.observed, f."limit", f.action, '
    "f.evidence, f.status, f.created_at, f.resolution, f.note, f.resolved_at, f.resolved_by"
)


@dataclass(frozen=True)
class RulesRow:
    tenant_id: uuid.UUID
    max_requests_per_minute: int | None
    max_same_source_per_hour: int | None
    max_tokens_per_day: int | None
    action: str
    version: int
    updated_at: datetime


@dataclass(frozen=True)
class FlagRow:
    id: int
    tenant_id: uuid.UUID
    user_id: int
    external_id: str
    rule: str
    observed: int
    limit: int
    action: str
    evidence: dict[str, Any]
    status: str
    created_at: datetime
    resolution: str | None
    note: str | None
    resolved_at: datetime | None
    resolved_by: str | None


# -- rules ---------------------------------------------------------------------------------


async def get_rules(
    executor: AsyncSession | AsyncConnection, tenant_id: uuid.UUID
) -> RulesRow | None:
    row = (
        await executor.execute(
            text(f"SELECT {RULE_COLUMNS} FROM anomaly_rules WHERE tenant_id = :t"),
            {"t": tenant_id},
        )
    ).one_or_none()
    return RulesRow(*row) if row else None


async def put_rules(
    session: AsyncSession, tenant_id: uuid.UUID, values: dict[str, Any]
) -> RulesRow:
    """Replace the tenant's rules; the version rises by one."""
    row = (
        await session.execute(
            text(
                f"""
                INSERT INTO anomaly_rules (tenant_id, max_requests_per_minute,
                    max_same_source_per_hour, max_tokens_per_day, action)
                VALUES (:t, :rpm, :same, :tokens, :action)
                ON CONFLICT (tenant_id) DO UPDATE SET
                    max_requests_per_minute = EXCLUDED.max_requests_per_minute,
                    max_same_source_per_hour = EXCLUDED.max_same_source_per_hour,
                    max_tokens_per_day = EXCLUDED.max_tokens_per_day,
                    action = EXCLUDED.action,
                    version = anomaly_rules.version + 1,
                    updated_at = now()
                RETURNING {RULE_COLUMNS}
                """
            ),
            {"t": tenant_id, **values},
        )
    ).one()
    return RulesRow(*row)


# -- breaches ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BreachContext:
    """What recording a breach needs, read in one statement: the user's account status,
    their external id, the tenant's webhook URL."""

    external_id: str
    account_status: str | None
    webhook_url: str | None


async def breach_context(session: AsyncSession, user_id: int) -> BreachContext:
    row = (
        await session.execute(
            text(
                "SELECT u.external_id, a.status, t.webhook_url FROM users u "
                "JOIN tenants t ON t.id = u.tenant_id "
                "LEFT JOIN accounts a ON a.user_id = u.id AND a.kind = 'user' "
                "WHERE u.id = :u"
            ),
            {"u": user_id},
        )
    ).one()
    return BreachContext(*row)


async def insert_flag(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    user_id: int,
    rule: str,
    observed: int,
    limit: int,
    action: str,
    evidence: dict[str, Any],
) -> FlagRow | None:
    """The new open flag, or None when this user's flag for this rule is still open."""
    row = (
        await session.execute(
            text(
                f"""
                WITH f AS (
                    INSERT INTO anomaly_flags (tenant_id, user_id, rule, observed, "limit",
                        action, evidence)
                    VALUES (:t, :u, :rule, :observed, :limit, :action, CAST(:evidence AS jsonb))
                    ON CONFLICT (user_id, rule) WHERE status = 'open' DO NOTHING
                    RETURNING *
                )
                SELECT {FLAG_COLUMNS} FROM f JOIN users u ON u.id = f.user_id
                """
            ),
            {
                "t": tenant_id,
                "u": user_id,
                "rule": rule,
                "observed": observed,
                "limit": limit,
                "action": action,
                "evidence": orjson.dumps(evidence).decode(),
            },
        )
    ).one_or_none()
    return FlagRow(*row) if row else None


# -- the review queue ----------------------------------------------------------------------


async def list_flags(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    status: str | None,
    external_id: str | None,
    before_id: int | None,
    limit: int,
) -> list[FlagRow]:
    """Newest first, ids below ``before_id`` (a page's cursor)."""
    rows = await session.execute(
        text(
            f"""
            SELECT {FLAG_COLUMNS} FROM anomaly_flags f JOIN users u ON u.id = f.user_id
            WHERE f.tenant_id = :t
              AND (CAST(:status AS text) IS NULL OR f.status = :status)
              AND (CAST(:external_id AS text) IS NULL OR u.external_id = :external_id)
              AND (CAST(:before AS bigint) IS NULL OR f.id < :before)
            ORDER BY f.id DESC LIMIT :limit
            """
        ),
        {
            "t": tenant_id,
            "status": status,
            "external_id": external_id,
            "before": before_id,
            "limit": limit,
        },
    )
    return [FlagRow(*r) for r in rows]


async def count_open(session: AsyncSession, tenant_id: uuid.UUID, *, cap: int) -> int:
    """The tenant's open flags, counted up to ``cap`` (a short range of the partial index
    ``ix_anomaly_flags_tenant_id_open``, revision 0020): ``cap`` means "at least"."""
    return int(
        (
            await session.execute(
                text(
                    "SELECT count(*) FROM (SELECT 1 FROM anomaly_flags "
                    "WHERE tenant_id = :t AND status = 'open' LIMIT :cap) f"
                ),
                {"t": tenant_id, "cap": cap},
            )
        ).scalar_one()
    )


async def lock_flag(session: AsyncSession, tenant_id: uuid.UUID, flag_id: int) -> FlagRow | None:
    """The flag, locked until the transaction ends (two reviews of one flag queue)."""
    row = (
        await session.execute(
            text(
                f"SELECT {FLAG_COLUMNS} FROM anomaly_flags f JOIN users u ON u.id = f.user_id "
                "WHERE f.tenant_id = :t AND f.id = :id FOR UPDATE OF f"
            ),
            {"t": tenant_id, "id": flag_id},
        )
    ).one_or_none()
    return FlagRow(*row) if row else None


async def resolve_flags(
    session: AsyncSession,
    *,
    user_id: int,
    flag_ids: list[int] | None,
    resolution: str,
    note: str,
    resolved_by: str,
) -> list[int]:
    """Close the user's open flags (those of ``flag_ids``, or every one when None)."""
    rows = await session.execute(
        text(
            """
            UPDATE anomaly_flags SET status = 'resolved', resolution = :resolution,
                note = :note, resolved_at = now(), resolved_by = :by
            WHERE user_id = :u AND status = 'open'
              AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(CAST(:ids AS bigint[])))
            RETURNING id
            """
        ),
        {"u": user_id, "ids": flag_ids, "resolution": resolution, "note": note, "by": resolved_by},
    )
    return sorted(int(r.id) for r in rows)


async def get_flag(session: AsyncSession, flag_id: int) -> FlagRow:
    row = (
        await session.execute(
            text(
                f"SELECT {FLAG_COLUMNS} FROM anomaly_flags f JOIN users u ON u.id = f.user_id "
                "WHERE f.id = :id"
            ),
            {"id": flag_id},
        )
    ).one()
    return FlagRow(*row)
