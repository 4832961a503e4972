"""The request transaction commits before the client sees the response."""

from __future__ import annotations

import asyncio
import socket
import uuid

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import text

from app.core.db import Database
from app.core.deps import DBSession


async def test_a_write_is_committed_before_its_response_reaches_the_client(settings) -> None:
    """A client that reads right after a 200 must see what that request wrote."""
    table = f"tx_probe_{uuid.uuid4().hex[:8]}"
    db = Database(settings.database_url, pool_size=4, max_overflow=0)
    async with db.session() as s:
        await s.execute(text(f"CREATE TABLE {table} (marker text)"))
        # Make COMMIT slow (a deferred trigger sleeps at commit time), so that a response
        # sent before the commit would be caught reading nothing.
        await s.execute(
            text(
                f"CREATE FUNCTION {table}_slow() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$"
            )
        )
        await s.execute(
            text(
                f"CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON {table} "
                f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {table}_slow()"
            )
        )

    app = FastAPI()
    app.state.db = db

    @app.post("/write/{marker}")
    async def write(marker: str, session: DBSession) -> dict[str, str]:
        await session.execute(text(f"INSERT INTO {table} VALUES (:m)"), {"m": marker})
        return {"marker": marker}

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"http://127.0.0.1:{port}/write/first")
        assert response.status_code == 200
        async with db.session() as s:
            seen = (await s.execute(text(f"SELECT marker FROM {table}"))).scalars().all()
        assert seen == ["first"]
    finally:
        server.should_exit = True
        await task
        async with db.session() as s:
            await s.execute(text(f"DROP TABLE {table}"))
            await s.execute(text(f"DROP FUNCTION {table}_slow()"))
        await db.dispose()


async def test_connections_the_server_dropped_are_replaced_without_failing_a_request(
    settings, monkeypatch
) -> None:
    """After a database restart (here: every pooled backend terminated), the next
    transactions work on fresh connections; a connection idle past the threshold is
    pinged before it is handed out."""
    import app.core.db as db_module

    db = Database(settings.database_url, pool_size=3, max_overflow=0)
    other = Database(settings.database_url, pool_size=1, max_overflow=0)
    try:
        pids = set()
        async with db.session() as a, db.session() as b:  # two pooled connections
            for s in (a, b):
                pids.add((await s.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        async with other.autocommit() as killer:
            for pid in pids:
                await killer.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        await asyncio.sleep(0.2)  # the terminations reach the client sockets
        for _ in range(3):
            async with db.session() as s:
                pid = (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            assert pid not in pids

        monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 0.0)
        async with db.session() as s:
            assert (await s.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.dispose()
        await other.dispose()


async def test_autocommit_statements_commit_on_their_own(settings) -> None:
    table = f"ac_probe_{uuid.uuid4().hex[:8]}"
    db = Database(settings.database_url, pool_size=2, max_overflow=0)
    try:
        async with db.autocommit() as conn:
            await conn.execute(text(f"CREATE TABLE {table} (n int)"))
            await conn.execute(text(f"INSERT INTO {table} VALUES (1)"))
            # Then rolled back: nothing to roll back, each statement committed already.
            await conn.rollback()
        async with db.session() as s:
            assert (await s.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one() == 1
            # The pool's connections are back to ordinary transactions afterwards.
            await s.execute(text(f"INSERT INTO {table} VALUES (2)"))
            await s.rollback()
        async with db.session() as s:
            assert (await s.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one() == 1
            await s.execute(text(f"DROP TABLE {table}"))
    finally:
        await db.dispose()


async def test_an_unreachable_database_is_503_service_unavailable_not_500() -> None:
    from app.core.errors import install_error_handlers

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    db = Database(f"postgresql://postgres@127.0.0.1:{port}/nothing", pool_size=1)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/balance")
    async def read() -> dict[str, int]:
        async with db.session() as session:
            return {"n": (await session.execute(text("SELECT 1"))).scalar_one()}

    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/balance")
    finally:
        await db.dispose()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "ServiceUnavailable"
    assert response.headers["Retry-After"] == "1"
