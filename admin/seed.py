"""Demo data for ``swapmeter dev``: a tenant, an end user with 100 Tokens and an API key.

Safe to run on every start: what exists is kept, the credit is idempotent, and a new key is
made only when the demo user has no live one (keys are stored as hashes, so an existing
key cannot be shown again).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text

from app.core import audit
from app.core.db import Database
from app.core.settings import Settings
from app.tenancy import repository as tenancy_repository
from app.tenancy import service as tenancy
from billing import service as billing

DEMO_TENANT_SLUG = "demo"
DEMO_USER = "demo-user"
DEMO_CREDIT = 100
SEED_ACTOR = "system:seed"
# pg_advisory_xact_lock key: two dev processes starting together seed once.
SEED_LOCK = 0x73656564


@dataclass(frozen=True)
class DemoInfo:
    tenant_id: uuid.UUID
    tenant_slug: str
    user_external_id: str
    balance: int
    api_key: str | None  # the new key, shown once; None when the user already had one
    message: str


async def seed_demo(db: Database, settings: Settings) -> DemoInfo | None:
    """Creates what is missing of the demo data; None in production (nothing is seeded)."""
    if settings.environment == "production":
        return None
    async with db.session() as session:
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SEED_LOCK})
        tenant = await tenancy_repository.get_tenant_by_slug(session, DEMO_TENANT_SLUG)
        if tenant is None:
            tenant = await tenancy.create_tenant(session, name="Demo", slug=DEMO_TENANT_SLUG)
            await billing.open_tenant_accounts(session, tenant.id)
            await _audit(
                session,
                "tenant.create",
                tenant.id,
                f"tenant:{tenant.id}",
                {"name": tenant.name, "slug": tenant.slug},
            )

        user = await tenancy_repository.get_user(session, tenant.id, DEMO_USER)
        if user is None:
            imported = await tenancy.import_users(
                session, tenant.id, [tenancy.ImportEntry(DEMO_USER, display_name="Demo user")]
            )
            await billing.open_user_accounts(session, tenant.id, imported.created_user_ids)
            await _audit(
                session,
                "user.import",
                tenant.id,
                f"user:{DEMO_USER}",
                {"requested": 1, "created": imported.created, "existing": 0, "failed": 0},
            )
            user = await tenancy.get_user(session, tenant.id, DEMO_USER)

        # The idempotency key makes this a one-time credit however often dev starts.
        await billing.recharge(
            session,
            tenant.id,
            user.id,
            DEMO_CREDIT,
            idempotency_key=f"demo-seed:{user.id}:initial-credit",
            operator=SEED_ACTOR,
            reason="demo data",
        )

        api_key: str | None = None
        if await tenancy_repository.count_live_api_keys(session, user.id) == 0:
            row, api_key = await tenancy.create_api_key(
                session,
                tenant_id=tenant.id,
                user_id=user.id,
                name="demo",
                rate_limit_per_second=None,
            )
            await _audit(
                session,
                "api_key.create",
                tenant.id,
                f"api_key:{row.id}",
                {"user": DEMO_USER, "name": "demo", "prefix": row.prefix},
            )
            message = "Created a demo API key; it is shown only this once."
        else:
            message = (
                "The demo user already has an API key (stored only as a hash, so it cannot be "
                "shown again); create another with POST "
                f"/api/v1/admin/tenants/{tenant.id}/users/{DEMO_USER}/api-keys."
            )
        account = await billing.account_view(session, user.id)
    return DemoInfo(
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        user_external_id=DEMO_USER,
        balance=account.balance,
        api_key=api_key,
        message=message,
    )


async def _audit(session, action: str, tenant_id: uuid.UUID, target: str, details: dict) -> None:  # type: ignore[no-untyped-def]
    await audit.record(
        session,
        request=None,
        actor=None,
        actor_label=SEED_ACTOR,
        action=action,
        tenant_id=tenant_id,
        target=target,
        details=details,
    )
