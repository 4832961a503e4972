"""Sending a finished job's webhook, outside the transaction that finished it.

The finishing transaction writes a ``webhook_deliveries`` row (an outbox) with a lease for
the worker that finished the job; that worker sends it right after the commit. If it dies
first, the row's lease runs out and another worker's sweep sends it (``claim_stale``).
``app.webhooks.delivery`` signs (``X-SwapMeter-Signature``, the tenant's secret), vets
the address and retries with backoff; every attempt ends up in the row.
"""

from __future__ import annotations

import logging
import uuid

from app.db import Database
from app.jobs import metrics
from app.jobs import repository as jobs_repo
from app.jobs import service as jobs
from app.settings import Settings
from app.webhooks import delivery as webhooks
from app.webhooks import repository as repo
from app.webhooks import service

log = logging.getLogger(__name__)

LEASE_SHARE = 0.8  # of the delivery's lease that its tries may take
_EVENT_NAMESPACE = uuid.UUID("5a0d6c8e-1f7b-4c1e-9a53-6e2f0c7b9d41")


def event_id(job_id: uuid.UUID, delivery_id: int) -> str:
    """The X-SwapMeter-Delivery of a job's end: the same on every try and on every resend
    (a sweep after a worker died mid-delivery), so a receiver can drop duplicates."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{job_id}/{delivery_id}"))


async def send(db: Database, settings: Settings, delivery_id: int) -> bool | None:
    """Deliver one pending webhook; True/False as it went, None when not pending."""
    async with db.session() as session:
        delivery = await repo.get_delivery(session, delivery_id)
        if delivery is None or delivery.status != "pending":
            return None
        job = await jobs_repo.get_job(session, delivery.job_id)
        if job is None:
            return None
        secret = await service.webhook_secret(session, delivery.tenant_id)
    result = await webhooks.deliver(
        delivery.url,
        jobs.job_json(job),
        secret.secret,
        attempts=settings.webhook_attempts,
        backoff_base_s=settings.webhook_backoff_base_seconds,
        timeout_s=settings.webhook_timeout_seconds,
        allow_hosts=settings.url_fetch_allow_hosts_set,
        delivery_id=event_id(delivery.job_id, delivery_id),
        # Done (delivered or given up) while this worker's lease on the row holds, so the
        # sweep never starts a second delivery of an event that is still being tried.
        give_up_after_s=LEASE_SHARE * settings.jobs_webhook_lease_seconds,
    )
    last = result.attempts[-1] if result.attempts else None
    async with db.session() as session:
        await repo.record_delivery(
            session,
            delivery_id,
            delivered=result.delivered,
            attempts=len(result.attempts),
            last_status_code=last.status if last else None,
            last_error=last.error if last else None,
            webhook_delivery_id=result.delivery_id,
            log=result.as_dict()["attempts"],
        )
    metrics.WEBHOOKS.labels("delivered" if result.delivered else "failed").inc()
    if not result.delivered:
        log.info("webhook of job %s not delivered after %d tries", job.id, len(result.attempts))
    return result.delivered


async def claim_stale(db: Database, settings: Settings, limit: int = 20) -> list[int]:
    """Pending deliveries whose sender died (their lease ran out), taken over by this
    process for ``jobs_webhook_lease_seconds``: the caller sends them."""
    async with db.session() as session:
        return await repo.claim_stale_deliveries(
            session, settings.jobs_webhook_lease_seconds, limit=limit
        )


async def send_logged(db: Database, settings: Settings, delivery_id: int) -> None:
    """``send`` for a background task: failures are logged, the row stays pending (swept)."""
    try:
        await send(db, settings, delivery_id)
    except Exception:  # noqa: BLE001 - the sweep retries once the lease runs out
        log.exception("webhook delivery %s failed", delivery_id)
