"""Acceptance with real ``swapmeter worker`` processes: two workers racing on a plan of
1,000 users, one killed and started again, pay each user exactly once for the day."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
from sqlalchemy import text

from app.core.db import Database
from app.core.settings import REPO_ROOT, Settings
from tests.admin.helpers import create_tenant, root_headers


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """``swapmeter worker`` on the test database, its housekeeping every 0.2 s."""
    env = {
        **os.environ,
        "SWAPMETER_ENVIRONMENT": "test",
        "SWAPMETER_DATABASE_URL": settings.database_url,
        "SWAPMETER_REDIS_URL": settings.redis_url,
        "SWAPMETER_JWT_SECRET": settings.jwt_secret,
        "SWAPMETER_DATA_DIR": str(settings.data_dir),
        "SWAPMETER_JOBS_HOUSEKEEPING_SECONDS": "0.2",
        "SWAPMETER_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--concurrency", "1", "--metrics-port", "0"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


async def _paid(db: Database, tenant_id: str) -> tuple[int, int, int]:
    """(grant entries, distinct users granted, users with a balance of 5)."""
    async with db.session() as s:
        row = (
            await s.execute(
                text(
                    "SELECT (SELECT count(*) FROM ledger_entries WHERE tenant_id = :t "
                    "        AND kind = 'grant'),"
                    "       (SELECT count(DISTINCT to_account_id) FROM ledger_entries "
                    "        WHERE tenant_id = :t AND kind = 'grant'),"
                    "       (SELECT count(*) FROM accounts WHERE tenant_id = :t "
                    "        AND kind = 'user' AND balance = 5)"
                ),
                {"t": tenant_id},
            )
        ).one()
        return tuple(row)  # type: ignore[return-value]


async def _wait(
    db: Database, tenant_id: str, workers: list[subprocess.Popen[bytes]], users: int
) -> None:
    deadline = asyncio.get_running_loop().time() + 90
    while (await _paid(db, tenant_id))[2] < users:
        assert all(w.poll() is None for w in workers), "a worker exited"
        assert asyncio.get_running_loop().time() < deadline, await _paid(db, tenant_id)
        await asyncio.sleep(0.2)


async def test_two_worker_processes_and_a_restart_pay_1000_users_once(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    tid = (await create_tenant(client))["id"]
    headers = await root_headers(client)
    plan = {"daily_free_tokens": 5, "refill_time": "00:00", "timezone": "UTC"}
    answer = await client.put(
        f"/api/v1/admin/tenants/{tid}/plans/daily", json=plan, headers=headers
    )
    assert answer.status_code == 200, answer.text
    users = [{"external_id": f"w{n:04d}", "plan": "daily"} for n in range(1000)]
    workers = [_start_worker(settings), _start_worker(settings)]
    try:
        answer = await client.post(
            f"/api/v1/admin/tenants/{tid}/users/import", json={"users": users}, headers=headers
        )
        assert answer.json()["created"] == 1000, answer.text
        await _wait(db, tid, workers, 1000)
        workers[0].kill()  # a restart: killed, started again, more users join meanwhile
        workers[0].wait(10)
        workers[0] = _start_worker(settings)
        late = [{"external_id": f"late{n}", "plan": "daily"} for n in range(10)]
        await client.post(
            f"/api/v1/admin/tenants/{tid}/users/import", json={"users": late}, headers=headers
        )
        await _wait(db, tid, workers, 1010)
        await asyncio.sleep(1.0)  # several more rounds of both workers
    finally:
        for w in workers:
            w.kill()
            w.wait(10)
    assert await _paid(db, tid) == (1010, 1010, 1010)
    verify = await client.get(
        "/api/v1/admin/ledger/verify", params={"tenant_id": tid}, headers=headers
    )
    assert verify.json()["ok"] is True, verify.text
