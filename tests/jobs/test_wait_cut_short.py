"""A swap whose wait the database cuts short answers 202 with its job, never an error that
hides a job the client may be charged for; before the job is committed, the error stands.

The API app reaches PostgreSQL through a TCP proxy that the test cuts (every connection
reset, new ones refused) and restores: the shared server itself is never stopped. No
worker runs here, so the job stays queued while its request waits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.core.db import Database
from tests.jobs.conftest import (
    balance,
    client_for,
    face,
    free_port,
    job_settings,
    make_customer,
    running_app,
)


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; ``cut`` resets every connection and
    refuses new ones until ``restore``: to its clients, the server went down."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
            )
        finally:
            for w in (writer, upstream_writer):
                self._writers.discard(w)
                w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as a dying server's socket gives
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()


@pytest.fixture(scope="module")
async def proxy(settings) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(settings.database_url)
    server = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await server.start()
    yield server
    await server.cut()


@pytest.fixture(scope="module")
async def api_app(settings, proxy: TcpProxy, tmp_path_factory) -> AsyncIterator[FastAPI]:
    parts = urlsplit(settings.database_url)
    through_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    configured = job_settings(
        settings,
        tmp_path_factory.mktemp("wait-cut-short"),
        database_url=through_proxy,
        jobs_inprocess_worker=False,
        jobs_image_wait_seconds=60.0,
    )
    async with running_app(configured) as application:
        yield application


@pytest.fixture
async def api(api_app: FastAPI, proxy: TcpProxy) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(api_app) as client:
        yield client
    if proxy._server is None:  # a failed test left it cut
        await proxy.restore()


async def jobs_of(db: Database, user_id: int) -> list[dict[str, object]]:
    async with db.session() as s:
        rows = await s.execute(
            text("SELECT id, status, tokens_held FROM jobs WHERE user_id = :u"), {"u": user_id}
        )
    return [dict(r._mapping) for r in rows]


def swap_body() -> dict[str, str]:
    return {
        "source": base64.b64encode(face("obama.jpg")).decode(),
        "target": base64.b64encode(face("biden.jpg")).decode(),
    }


async def test_an_image_swap_whose_wait_loses_the_database_answers_202_with_its_job(
    api: httpx.AsyncClient, db: Database, proxy: TcpProxy
) -> None:
    customer = await make_customer(api, db, tokens=10)
    swap = asyncio.create_task(
        api.post("/api/v1/swap-face", json=swap_body(), headers=customer.headers)
    )
    async with asyncio.timeout(30):  # the job is committed, and its request waits for it
        while not await jobs_of(db, customer.user_id):  # noqa: ASYNC110 - a row, no event
            await asyncio.sleep(0.05)
    await proxy.cut()
    try:
        async with asyncio.timeout(30):  # the wait re-reads the job within 5 s, and fails
            response = await swap
    finally:
        await proxy.restore()

    assert response.status_code == 202, response.text
    (job,) = await jobs_of(db, customer.user_id)
    answer = response.json()
    assert answer["status"] == "queued" and answer["job_id"] == str(job["id"])
    assert answer["tokens_held"] == job["tokens_held"] == 1
    assert answer["urls"]["get"] == f"/api/v1/jobs/{job['id']}"
    # The job the answer names is the one holding the Token, and it can be followed.
    assert await balance(api, customer) == {"balance": 10, "held": 1, "available": 9}
    polled = await api.get(answer["urls"]["get"], headers=customer.headers)
    assert polled.status_code == 200 and polled.json()["status"] == "queued"


async def test_a_swap_that_cannot_reach_the_database_before_its_job_answers_503_and_holds_nothing(
    api: httpx.AsyncClient, db: Database, proxy: TcpProxy
) -> None:
    customer = await make_customer(api, db, tokens=10)
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    await proxy.cut()
    try:
        response = await api.post(
            "/api/v1/swap-face", json=swap_body(), headers={**customer.headers, **key}
        )
    finally:
        await proxy.restore()

    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "ServiceUnavailable"
    assert "Retry-After" in response.headers
    assert await jobs_of(db, customer.user_id) == []
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
