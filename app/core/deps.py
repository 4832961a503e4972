"""FastAPI dependencies shared by every router: the per-request transaction and Redis."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import InvalidCursor
from app.core.settings import Settings


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


# What next_cursor holds (a row id; ids stay far below 10^18), or empty for the first
# page: the schema's pattern and the server's test are one.
ID_CURSOR_PATTERN = r"^(?:[1-9][0-9]{0,17})?$"
_ID_CURSOR_RE = re.compile(ID_CURSOR_PATTERN)


async def id_cursor(
    cursor: Annotated[
        str | None,
        Query(
            description="next_cursor of the previous page",
            json_schema_extra={"pattern": ID_CURSOR_PATTERN},
        ),
    ] = None,
) -> int | None:
    """The row id a page's ``next_cursor`` stands for (pages going back from it).

    Anything else is 400 InvalidCursor here (numbers no bigint id can have included,
    which would otherwise fail in the database as a 500)."""
    if not cursor:
        return None
    if _ID_CURSOR_RE.fullmatch(cursor) is None or int(cursor) > MAX_ROW_ID:
        raise InvalidCursor("cursor is not one this API returned")
    return int(cursor)


IdCursor = Annotated[int | None, Depends(id_cursor)]
