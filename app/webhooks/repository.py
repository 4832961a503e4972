"""Every SQL statement of webhooks: the deliveries (an outbox row per finished job that has
a webhook, written in the transaction that finishes it) and the tenants' signing secrets.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.repository import JobRecord

# -- webhook deliveries ----------------------------------------------------------------------


async def insert_delivery(session: AsyncSession, job: JobRecord, url: str, lease_s: float) -> int:
    row = (
        await session.execute(
            text(
                """
                INSERT INTO webhook_deliveries (job_id, tenant_id, url, lease_until)
                VALUES (:job_id, :tenant_id, :url, now() + make_interval(secs => :lease_s))
                RETURNING id
                """
            ),
            {"job_id": job.id, "tenant_id": job.tenant_id, "url": url, "lease_s": lease_s},
        )
    ).one()
    return int(row.id)


async def claim_stale_deliveries(session: AsyncSession, lease_s: float, limit: int) -> list[int]:
    """Pending deliveries whose sender's lease ran out (it died): taken for ``lease_s``."""
    rows = await session.execute(
        text(
            """
            UPDATE webhook_deliveries
            SET lease_until = now() + make_interval(secs => :lease_s), updated_at = now()
            WHERE id IN (
                SELECT id FROM webhook_deliveries
                WHERE status = 'pending' AND lease_until < now()
                ORDER BY id LIMIT :limit
                FOR UPDATE SKIP LOCKED
            )
            RETURNING id
            """
        ),
        {"lease_s": lease_s, "limit": limit},
    )
    return [int(r.id) for r in rows]


async def get_delivery(session: AsyncSession, delivery_id: int) -> Any | None:
    return (
        await session.execute(
            text(
                "SELECT id, job_id, tenant_id, url, status, attempts FROM webhook_deliveries "
                "WHERE id = :id"
            ),
            {"id": delivery_id},
        )
    ).first()


async def record_delivery(
    session: AsyncSession,
    delivery_id: int,
    *,
    delivered: bool,
    attempts: int,
    last_status_code: int | None,
    last_error: str | None,
    webhook_delivery_id: str,
    log: list[dict[str, Any]],
) -> None:
    await session.execute(
        text(
            """
            UPDATE webhook_deliveries
            SET status = CASE WHEN :delivered THEN 'delivered' ELSE 'failed' END,
                attempts = attempts + :attempts, last_status_code = :last_status_code,
                last_error = :last_error, delivery_id = :webhook_delivery_id,
                log = log || CAST(:log AS jsonb), updated_at = now(),
                delivered_at = CASE WHEN :delivered THEN now() END
            WHERE id = :id AND status = 'pending'
            """
        ),
        {
            "id": delivery_id,
            "delivered": delivered,
            "attempts": attempts,
            "last_status_code": last_status_code,
            "last_error": last_error,
            "webhook_delivery_id": webhook_delivery_id,
            "log": orjson.dumps(log).decode(),
        },
    )


async def deliveries_of_job(session: AsyncSession, job_id: uuid.UUID) -> list[Any]:
    rows = await session.execute(
        text(
            "SELECT id, url, status, attempts, last_status_code, last_error, delivery_id, "
            "created_at, updated_at, delivered_at FROM webhook_deliveries "
            "WHERE job_id = :job_id ORDER BY id"
        ),
        {"job_id": job_id},
    )
    return list(rows)


# -- webhook secrets -------------------------------------------------------------------------


async def webhook_secret(session: AsyncSession, tenant_id: uuid.UUID) -> Any | None:
    return (
        await session.execute(
            text(
                "SELECT secret, created_at, rotated_at FROM tenant_webhook_secrets "
                "WHERE tenant_id = :tenant_id"
            ),
            {"tenant_id": tenant_id},
        )
    ).first()


async def create_webhook_secret(session: AsyncSession, tenant_id: uuid.UUID, secret: str) -> Any:
    """Insert the tenant's first secret, or return the one a concurrent call made."""
    await session.execute(
        text(
            "INSERT INTO tenant_webhook_secrets (tenant_id, secret) VALUES (:tenant_id, :secret) "
            "ON CONFLICT (tenant_id) DO NOTHING"
        ),
        {"tenant_id": tenant_id, "secret": secret},
    )
    return await webhook_secret(session, tenant_id)


async def rotate_webhook_secret(session: AsyncSession, tenant_id: uuid.UUID, secret: str) -> Any:
    return (
        await session.execute(
            text(
                """
                INSERT INTO tenant_webhook_secrets (tenant_id, secret) VALUES (:tenant_id, :secret)
                ON CONFLICT (tenant_id) DO UPDATE SET secret = excluded.secret, rotated_at = now()
                RETURNING secret, created_at, rotated_at
                """
            ),
            {"tenant_id": tenant_id, "secret": secret},
        )
    ).one()
