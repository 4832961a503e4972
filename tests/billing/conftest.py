"""Billing test helpers: tenants, users and accounts arranged directly in the database.

Each test makes its own tenant (random slug), so tests never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.core.db import Database
from app.migrate import alembic_config
from billing import service
from tests.conftest import server_sql


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


@contextmanager
def scratch_database_at(server_url: str, revision: str, label: str) -> Iterator[str]:
    """A database of its own migrated to ``revision`` (a migration test's starting point),
    dropped afterwards: what a migration does to data never touches the run's database."""
    name = f"swapmeter_{label}_{uuid.uuid4().hex[:12]}"
    server_sql(server_url, f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        command.upgrade(alembic_config(url), revision)
        yield url
    finally:
        server_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def fetch(url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    """One statement on its own connection (a scratch database has no pool)."""
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(statement, *args))
    finally:
        await conn.close()
