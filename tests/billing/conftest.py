"""Billing test helpers: tenants, users and accounts arranged directly in the database.

Each test makes its own tenant (random slug), so tests never see each other's rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from sqlalchemy import text

from app.core.db import Database
from billing import service


@dataclass
class World:
    """One tenant with users (external id -> user id) and its system accounts."""

    tenant_id: uuid.UUID
    users: dict[str, int] = field(default_factory=dict)


async def make_tenant(db: Database, *, approval_threshold: int | None = None) -> World:
    async with db.session() as session:
        tenant_id = (
            await session.execute(
                text(
                    "INSERT INTO tenants (name, slug, approval_threshold) "
                    "VALUES (:name, :slug, :threshold) RETURNING id"
                ),
                {
                    "name": "Billing test",
                    "slug": f"b-{uuid.uuid4().hex[:12]}",
                    "threshold": approval_threshold,
                },
            )
        ).scalar_one()
        await service.open_tenant_accounts(session, tenant_id)
    return World(tenant_id)


async def add_users(db: Database, world: World, external_ids: list[str]) -> None:
    async with db.session() as session:
        rows = await session.execute(
            text(
                "INSERT INTO users (tenant_id, external_id) "
                "SELECT :tenant_id, unnest(CAST(:ids AS text[])) RETURNING id, external_id"
            ),
            {"tenant_id": world.tenant_id, "ids": external_ids},
        )
        created = {r.external_id: r.id for r in rows}
        await service.open_user_accounts(session, world.tenant_id, list(created.values()))
    world.users.update(created)


async def account_state(db: Database, user_id: int) -> tuple[int, int]:
    async with db.session() as session:
        view = await service.account_view(session, user_id)
    return view.balance, view.held


@pytest.fixture
async def world(db: Database) -> World:
    w = await make_tenant(db)
    await add_users(db, w, ["alice", "bob"])
    return w
