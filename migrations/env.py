"""Alembic environment: async engine, the ORM metadata and its naming convention."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.settings import get_settings, to_asyncpg_url
from app.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return to_asyncpg_url(config.get_main_option("sqlalchemy.url") or get_settings().database_url)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        # Two `migrate` runs at once (several pods starting) must not race each other.
        context.execute("SELECT pg_advisory_xact_lock(73217001)")
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
