"""Swap API test helpers: apps with an in-process worker, customers with Tokens, media.

Each test makes its own tenant, user and API key through the admin API, and recharges the
user through the bulk recharge endpoint, so balances and ledgers are the product's own.
Media: the real photographs in shared/media/faces, a generated faceless gradient, and
short 320x180 videos panned over a still (tests/inference/test_video.py).
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.core.db import Database
from app.core.settings import Settings
from app.main import create_app
from tests.admin.helpers import create_api_key, create_tenant, import_users, root_headers
from tests.conftest import FACES_DIR
from tests.inference.video.clips import make_video


def face(name: str) -> bytes:
    return (FACES_DIR / name).read_bytes()


def gradient_png(width: int = 400, height: int = 300) -> bytes:
    """A smooth colour gradient: a valid image with no face in it."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    image = np.stack(
        [
            np.broadcast_to(x, (height, width)),
            np.broadcast_to(y, (height, width)),
            np.full((height, width), 128.0, np.float32),
        ],
        axis=2,
    ).astype(np.uint8)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def job_settings(settings: Settings, tmp: Path, **overrides: Any) -> Settings:
    """The session settings with an in-process worker, its own results dir, fast loops."""
    values: dict[str, Any] = {
        "jobs_inprocess_worker": True,
        "jobs_worker_concurrency": 2,
        "jobs_housekeeping_seconds": 0.5,
        "jobs_poll_seconds": 1.0,
        "data_dir": tmp,
        "results_dir": tmp / "results",
        "webhook_backoff_base_seconds": 0.05,
        "webhook_attempts": 3,
        "webhook_timeout_seconds": 5.0,
        **overrides,
    }
    return settings.model_copy(update=values)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def client_for(application: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://swapmeter.test", timeout=120)


@dataclass
class Customer:
    tenant_id: str
    external_id: str
    user_id: int
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_customer(
    client: httpx.AsyncClient,
    db: Database,
    *,
    tokens: int = 100,
    rate_limit_per_second: int | None = 1000,
    tenant_id: str | None = None,
) -> Customer:
    """A user with an API key and ``tokens``, in a new tenant (or in ``tenant_id``'s)."""
    tenant = await create_tenant(client) if tenant_id is None else {"id": tenant_id}
    external_id = f"u-{uuid.uuid4().hex[:8]}"
    await import_users(client, tenant["id"], [external_id])
    if tokens:
        response = await client.post(
            f"/api/v1/admin/tenants/{tenant['id']}/recharges/bulk",
            json={"users": [external_id], "amount": tokens, "reason": "test"},
            headers=await root_headers(client),
        )
        assert response.status_code == 200 and response.json()["status"] == "applied"
    body: dict[str, Any] = {"name": "swap tests"}
    if rate_limit_per_second is not None:
        body["rate_limit_per_second"] = rate_limit_per_second
    key = await create_api_key(client, tenant["id"], external_id, **body)
    async with db.session() as s:
        user_id = (
            await s.execute(
                text("SELECT id FROM users WHERE tenant_id = :t AND external_id = :e"),
                {"t": tenant["id"], "e": external_id},
            )
        ).scalar_one()
    return Customer(tenant["id"], external_id, user_id, key["key"], key["id"])


async def balance(client: httpx.AsyncClient, customer: Customer) -> dict[str, int]:
    """The customer's balance, held and available (what expires when: tests/billing)."""
    response = await client.get("/api/v1/balance", headers=customer.headers)
    assert response.status_code == 200, response.text
    return {k: response.json()[k] for k in ("balance", "held", "available")}


async def assert_delivered(client: httpx.AsyncClient, customer: Customer, job_id: object) -> None:
    """The job succeeded, charged one Token (of 10), and its result is served whole."""
    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=customer.headers)).json()
    assert (job["status"], job["tokens_charged"]) == ("succeeded", 1), job
    result = await client.get(f"/api/v1/jobs/{job_id}/result", headers=customer.headers)
    assert result.status_code == 200 and len(result.content) == job["result"]["size"]
    assert await balance(client, customer) == {"balance": 9, "held": 0, "available": 9}


async def ledger_kinds(client: httpx.AsyncClient, customer: Customer) -> list[tuple[str, int]]:
    """(kind, signed amount) of the user's ledger, oldest first."""
    response = await client.get("/api/v1/ledger", params={"limit": 200}, headers=customer.headers)
    assert response.status_code == 200, response.text
    return [(i["kind"], i["amount"]) for i in reversed(response.json()["items"])]


async def verify_ledger(client: httpx.AsyncClient, tenant_id: str) -> dict[str, Any]:
    response = await client.get(
        "/api/v1/admin/ledger/verify",
        params={"tenant_id": tenant_id},
        headers=await root_headers(client),
    )
    assert response.status_code == 200, response.text
    return response.json()


async def wait_for_job(
    client: httpx.AsyncClient,
    customer: Customer,
    job_id: str,
    *,
    until: Any = None,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Poll GET /jobs/{id} until ``until(job)`` (default: a final status)."""
    done = until or (lambda j: j["status"] in ("succeeded", "failed", "canceled"))
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await client.get(f"/api/v1/jobs/{job_id}", headers=customer.headers)
        assert response.status_code == 200, response.text
        job = response.json()
        if done(job):
            return job
        assert asyncio.get_running_loop().time() < deadline, f"job stuck: {job}"
        await asyncio.sleep(0.1)


# -- a local HTTP server: URL inputs, redirects and webhook receipts ------------------------


@dataclass
class LocalServer:
    port: int
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    event: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def allow(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def posted(
        self, path: str, timeout_s: float = 10.0
    ) -> list[tuple[str, dict[str, str], bytes]]:
        """The requests received at ``path`` once there is one (a webhook arriving)."""
        for _ in range(int(timeout_s / 0.1)):
            received = [r for r in self.received if r[0] == path]
            if received:
                return received
            await asyncio.sleep(0.1)
        raise AssertionError(f"nothing arrived at {path} within {timeout_s:g} s")


def _handler(server: LocalServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path in server.redirects:
                self.send_response(302)
                self.send_header("Location", server.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = server.files.get(self.path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            server.received.append((self.path, dict(self.headers.items()), body))
            server.event.set()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@pytest.fixture(scope="module")
def local_server() -> Iterator[LocalServer]:
    server = LocalServer(free_port())
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", server.port), _handler(server))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def clip_2s(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """2 s, 320x180 at 30 fps with audio: swaps in well under a second."""
    return make_video(tmp_path_factory.mktemp("clips") / "two.mp4", seconds=2.0).read_bytes()


@pytest.fixture(scope="session")
def clip_long(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """20 s, 320x180 at 30 fps: several seconds of work, long enough to stop part-way."""
    return make_video(tmp_path_factory.mktemp("clips") / "long.mp4", seconds=20.0).read_bytes()
