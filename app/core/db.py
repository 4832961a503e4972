"""Database engine, ORM base and the per-request transaction.

The boundary owns the transaction: ``Database.session`` / the ``db_session`` dependency begin
it and commit on success; services only ``flush()``. ``Database.autocommit`` is for a single
statement that is its own transaction (a read, or one self-contained write): it spends no
round trips on BEGIN and COMMIT.

Pooled connections are checked on the way out of the pool, cheaply: one the server closed
(a restart, an idle timeout, a terminated backend) is replaced at no cost, and one that sat
idle for ``PING_AFTER_IDLE_S`` is pinged first, for the failures nobody announced (a
firewall that forgot the socket). A busy pool pays nothing per request. A connection that
breaks mid-request fails that request, and SQLAlchemy then drops the whole pool.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import MetaData, event, exc
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from app.core.settings import Settings, to_asyncpg_url

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PING_AFTER_IDLE_S = 10.0


def connection_trouble(error: BaseException) -> bool:
    """Whether ``error`` says the database could not be reached or the connection broke (a
    restart, a failover, a killed backend, "the database system is starting up"), as
    opposed to an error in what was asked of it. Worth trying again, on a new
    connection."""
    import asyncpg

    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    trouble = (
        OSError,
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.AdminShutdownError,
        asyncpg.InterfaceError,
    )
    return any(isinstance(cause, trouble) for cause in causes(error))


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what lies under it: SQLAlchemy wraps the driver's error (``.orig``,
    which has the socket's error as ``__cause__``)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _check_on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Raise DisconnectionError (the pool then connects afresh) for a dead connection."""
    if dbapi_connection.driver_connection.is_closed():
        raise exc.DisconnectionError("the server closed this connection")
    idle_since = record.info.get("idle_since")
    if idle_since is not None and time.monotonic() - idle_since > PING_AFTER_IDLE_S:
        try:
            dbapi_connection.ping()
        except Exception as error:
            raise exc.DisconnectionError(f"ping failed: {error}") from error


class Database:
    """One engine and session factory per process (or per test)."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 10) -> None:
        self.engine: AsyncEngine = create_async_engine(
            to_asyncpg_url(url), pool_size=pool_size, max_overflow=max_overflow
        )
        event.listen(self.engine.sync_engine.pool, "checkin", _note_checkin)
        event.listen(self.engine.sync_engine.pool, "checkout", _check_on_checkout)
        # Same pool; its connections run each statement in a transaction of its own.
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection on which every statement commits by itself (no BEGIN, no COMMIT).

        For one statement at a time: a read, or a write that is a whole transaction on its
        own. Never for two writes that must succeed or fail together.
        """
        async with self._autocommit_engine.connect() as connection:
            yield connection

    async def dispose(self) -> None:
        await self.engine.dispose()
