"""FastAPI dependencies shared by every router: the per-request transaction and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database
from app.settings import Settings


def get_database(request: Request) -> Database:
    return request.app.state.db


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_redis(request: Request) -> Redis:
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
