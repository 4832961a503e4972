"""The demo seed of `swapmeter dev`: idempotent, 100 Tokens, a key shown once."""

from __future__ import annotations

from admin.seed import DEMO_USER, seed_demo
from app.tenancy import service as tenancy


async def test_seeding_twice_creates_one_tenant_user_credit_and_key(db, settings) -> None:
    first = await seed_demo(db, settings)
    second = await seed_demo(db, settings)
    assert first is not None and second is not None
    assert first.tenant_slug == "demo" and first.user_external_id == DEMO_USER
    assert first.tenant_id == second.tenant_id
    assert first.balance == second.balance == 100
    assert first.api_key is not None and first.api_key.startswith("sm_")
    assert second.api_key is None and "already has an API key" in second.message
    async with db.session() as s:
        found = await tenancy.authenticate_api_key(s, first.api_key)
    assert found.external_id == DEMO_USER


async def test_nothing_is_seeded_in_production(db, settings) -> None:
    production = settings.model_copy(update={"environment": "production"})
    assert await seed_demo(db, production) is None
