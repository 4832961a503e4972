"""FastAPI dependencies shared by every router: the per-request transaction and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from pydantic import AfterValidator
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidCursor
from app.settings import Settings


# Coroutines, not plain functions: FastAPI runs a plain-function dependency on its thread
# pool, a thread hop per request (about 0.3 ms here) for what is an attribute read.
async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_redis(request: Request) -> Redis:
    return request.app.state.redis


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the endpoint returns, rolled back on error."""
    async with request.app.state.db.session() as session:
        yield session


# scope="function": the transaction commits when the endpoint returns, BEFORE the response
# goes out. With the default ("request") FastAPI would send 200 first and commit after, so
# a client could read its old balance right after a successful recharge, or be told 200 for
# a commit that then failed.
DBSession = Annotated[AsyncSession, Depends(db_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RedisDep = Annotated[Redis, Depends(get_redis)]


MAX_ROW_ID = 2**63 - 1  # row ids are positive bigints


async def id_cursor(cursor: str | None = None) -> int | None:
    """The row id a page's ``next_cursor`` stands for (pages going back from it).

    Anything else is 400 InvalidCursor here, including numbers no bigint id can have,
    which would otherwise fail in the database as a 500."""
    if not cursor:
        return None
    try:
        row_id = int(cursor)
    except ValueError:
        row_id = 0
    if not 0 < row_id <= MAX_ROW_ID:
        raise InvalidCursor("cursor is not one this API returned")
    return row_id


IdCursor = Annotated[int | None, Depends(id_cursor)]


def _in_utc(value: datetime) -> datetime:
    """A time a client sent, in UTC (one without a time zone is taken as UTC)."""
    try:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00: 422, not a database error
        raise ValueError("the time is outside the range this API stores") from None


ClientTime = Annotated[datetime, AfterValidator(_in_utc)]
