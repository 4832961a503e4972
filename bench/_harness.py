"""What the benchmarks share: a scratch database, real server processes, an admin sign-in.

Each benchmark creates its own database on the server of SWAPMETER_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/postgres), migrates it, runs the product's own
processes against it on real sockets, and drops it again, so figures come from the code
path customers hit and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[1]

ADMIN_EMAIL = "bench@swapmeter.test"
ADMIN_PASSWORD = "bench-password-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plain(url: str) -> str:
    """asyncpg and libpq take postgresql:// URLs."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def server_url() -> str:
    return plain(
        os.environ.get("SWAPMETER_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def redis_url() -> str:
    return os.environ.get("SWAPMETER_REDIS_URL") or "redis://127.0.0.1:6379/15"


async def admin_sql(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@asynccontextmanager
async def scratch_database(name: str) -> AsyncIterator[str]:
    """A new database, migrated to head; its URL. Dropped on the way out, even on errors."""
    from app.migrate import upgrade_to_head

    server = server_url()
    database_url = server.rsplit("/", 1)[0] + "/" + name
    await admin_sql(server, f'DROP DATABASE IF EXISTS "{name}"')
    await admin_sql(server, f'CREATE DATABASE "{name}"')
    try:
        await asyncio.to_thread(upgrade_to_head, database_url)
        yield database_url
    finally:
        await admin_sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def service_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a server or worker process on the scratch database.

    ``settings`` are SWAPMETER_* settings without the prefix (``jobs_swapper="noop"``).
    """
    return {
        **os.environ,
        "SWAPMETER_ENVIRONMENT": "development",
        "SWAPMETER_DATABASE_URL": database_url,
        "SWAPMETER_REDIS_URL": redis_url(),
        "SWAPMETER_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
        "SWAPMETER_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "SWAPMETER_JWT_SECRET": "bench-secret-" + uuid.uuid4().hex,
        **{f"SWAPMETER_{k.upper()}": v for k, v in settings.items()},
    }


def start_server(
    env: dict[str, str], port: int, app: str = "app.main:create_app --factory"
) -> subprocess.Popen[bytes]:
    """The API as ``swapmeter api`` serves it: uvicorn, one process, the app factory (or
    another ASGI ``app``, such as bench/_floor_app.py, the same way)."""
    command = [
        sys.executable, "-m", "uvicorn", *app.split(),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, env=env)


def start_worker(env: dict[str, str], *, concurrency: int) -> subprocess.Popen[bytes]:
    """A ``swapmeter worker`` process (its metrics endpoint off: several may run)."""
    command = [
        sys.executable, "-m", "app.cli", "worker",
        "--concurrency", str(concurrency), "--metrics-port", "0",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, env={"SWAPMETER_LOG_LEVEL": "WARNING", **env})


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (a worker finishes or gives back its jobs), then SIGKILL after 10 s."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def wait_ready(client: httpx.AsyncClient, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("the server did not become ready within 60 s")


async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    """Sign in as the bootstrap admin."""
    response = await client.post(
        "/api/v1/auth/token", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def create_tenant(client: httpx.AsyncClient, auth: dict[str, str], name: str) -> str:
    """A new tenant with a unique slug; its id."""
    tenant = await client.post(
        "/api/v1/admin/tenants", json={"name": name, "slug": "bench-" + uuid.uuid4().hex[:8]},
        headers=auth,
    )  # fmt: skip
    tenant.raise_for_status()
    return str(tenant.json()["id"])


def cpu_seconds(pids: dict[str, int | list[int]]) -> dict[str, float]:
    """User + system CPU seconds used so far by each named process (or group of them),
    from /proc; empty where /proc is not there."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for name, group in pids.items():
        try:
            total = 0
            for pid in group if isinstance(group, list) else [group]:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
        used[name] = total / tick
    return used


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
