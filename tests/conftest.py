"""Test fixtures: real PostgreSQL and Redis, a fresh migrated database per test run.

Servers, in order: SWAPMETER_TEST_DATABASE_URL / SWAPMETER_TEST_REDIS_URL when set, else
127.0.0.1:5432 / 127.0.0.1:6379 when reachable, else embedded ones started under
``.swapmeter-test/``. Tests isolate themselves by creating their own tenants, so nothing
is truncated between tests (the audit log refuses TRUNCATE anyway).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from app.core.audit_anchor import redis_key
from app.core.db import Database
from app.core.settings import Settings
from app.embedded import EmbeddedPostgres, EmbeddedRedis, port_is_open
from app.main import create_app
from app.migrate import upgrade_to_head

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS_DIR = Path(os.environ.get("SWAPMETER_MODELS_DIR", SHARED / "models"))
FACES_DIR = SHARED / "media" / "faces"
TEST_JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


def _database_name() -> str:
    # The pid keeps concurrent test runs on one server (two checkouts, xdist) apart.
    return f"swapmeter_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    """(postgres server URL without database, redis URL)."""
    started: list = []
    pg_url = os.environ.get("SWAPMETER_TEST_DATABASE_URL", "")
    redis_url = os.environ.get("SWAPMETER_TEST_REDIS_URL", "")
    data_dir = REPO / ".swapmeter-test"
    if not pg_url:
        if port_is_open("127.0.0.1", 5432):
            pg_url = "postgresql://postgres@127.0.0.1:5432/postgres"
        else:
            pg = EmbeddedPostgres(data_dir)
            pg.start()
            started.append(pg)
            pg_url = pg.url()
    if not redis_url:
        if port_is_open("127.0.0.1", 6379):
            redis_url = "redis://127.0.0.1:6379/9"
        else:
            rd = EmbeddedRedis(data_dir)
            rd.start()
            started.append(rd)
            redis_url = rd.url
    yield pg_url, redis_url
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="session")
def database_url(servers: tuple[str, str]) -> Iterator[str]:
    """A fresh database for this test run (one per xdist worker), migrated to head."""
    server_url, redis_url = servers
    name = _database_name()
    server_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    server_sql(server_url, f'CREATE DATABASE "{name}"')
    # An earlier run with this name (a reused pid) may have left its audit anchor behind.
    with SyncRedis.from_url(redis_url) as r:
        r.delete(redis_key(name))
    url = server_url.rsplit("/", 1)[0] + "/" + name
    upgrade_to_head(url)
    yield url
    server_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_sql(server_url: str, statement: str) -> None:
    """Run one statement on the server (CREATE / DROP DATABASE: outside any transaction)."""

    async def run() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def redis_url(servers: tuple[str, str]) -> str:
    return servers[1]


@pytest.fixture(scope="session")
def settings(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        redis_url=redis_url,
        jwt_secret=TEST_JWT_SECRET,
        data_dir=tmp_path_factory.mktemp("data"),
        models_dir=MODELS_DIR,
        bootstrap_admin_email="root@swapmeter.test",
        bootstrap_admin_password="root-password-123",
    )


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[Database]:
    """Direct database access for arranging and checking state."""
    database = Database(settings.database_url, pool_size=20, max_overflow=20)
    yield database
    await database.dispose()


@pytest.fixture(scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def app(settings: Settings):  # type: ignore[no-untyped-def]
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://swapmeter.test") as c:
        yield c
