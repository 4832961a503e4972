"""``swapmeter admin`` login, users import, verify and the one-line errors, against a real
server."""

from __future__ import annotations

import csv
import json
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt

from admin.cli import config
from tests.admin.cli.conftest import free_port
from tests.admin.helpers import ROOT_EMAIL, create_tenant
from tests.conftest import TEST_JWT_SECRET


def test_login_keeps_the_token_and_url_readable_by_the_owner_only(cli: Any, live_url: str) -> None:
    result = cli(
        "login", "--email", ROOT_EMAIL, "--password-stdin", "--json", input="root-password-123\n"
    )
    assert result.exit_code == 0, result.stderr
    path = config.config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored["url"] == live_url and stored["email"] == ROOT_EMAIL
    assert stored["expires_at"] > time.time() and stored["token"].count(".") == 2
    assert result.json["url"] == live_url


def test_a_wrong_password_is_one_line_with_the_services_code(cli: Any) -> None:
    result = cli("login", "--email", ROOT_EMAIL, "--password-stdin", input="nope-nope-nope\n")
    assert result.exit_code == 1
    assert result.stderr.startswith("swapmeter admin: HTTP 401 ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_expired_login_says_to_log_in_again(logged_in: Any, monkeypatch: Any) -> None:
    # Expired in the stored login: said before any call.
    stored = json.loads(config.config_path().read_text())
    config.save({**stored, "expires_at": int(time.time()) - 5})
    result = logged_in("verify")
    assert result.exit_code == 1
    assert result.stderr == "swapmeter admin: login expired: run swapmeter admin login\n"

    # A token the service refuses as expired (SWAPMETER_ADMIN_TOKEN): the same line.
    now = int(time.time())
    expired = jwt.encode(
        {"sub": str(uuid.uuid4()), "role": "platform_admin", "tenant": None,
         "iss": "swapmeter", "iat": now - 7200, "exp": now - 3600},
        TEST_JWT_SECRET, algorithm="HS256",
    )  # fmt: skip
    monkeypatch.setenv("SWAPMETER_ADMIN_TOKEN", expired)
    result = logged_in("verify", "--json")
    assert result.exit_code == 1
    assert result.stderr == "swapmeter admin: login expired: run swapmeter admin login\n"


def test_an_unreachable_url_names_host_port_and_reason(cli: Any, monkeypatch: Any) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("SWAPMETER_ADMIN_TOKEN", "anything")
    result = cli("verify", "--url", f"http://127.0.0.1:{port}")
    assert result.exit_code == 3
    assert result.stderr.startswith(f"swapmeter admin: cannot reach 127.0.0.1:{port}: ")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_users_import_creates_users_and_reports_bad_rows_by_line(
    client: httpx.AsyncClient, logged_in: Any, tmp_path: Path
) -> None:
    tenant = await create_tenant(client)
    plan = {"daily_free_tokens": 5, "refill_time": "06:00", "timezone": "Europe/Berlin"}
    answer = await client.put(
        f"/api/v1/admin/tenants/{tenant['id']}/plans/vip",
        json=plan,
        headers={"Authorization": f"Bearer {config.load()['token']}"},
    )
    assert answer.status_code == 200, answer.text
    path = tmp_path / "users.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["external_id", "email", "display_name", "plan"])
        writer.writerows([[f"p{i}", f"p{i}@example.com", f"P {i}", "vip"] for i in range(250)])
        writer.writerow(["p0", "", "", ""])  # line 252: DuplicateEntry (here)
        writer.writerow(["bad", "not-an-email", "", ""])  # line 253: refused by the service
    args = ["users", "import", "--tenant", tenant["id"], "--csv", str(path), "--chunk-size", "100"]
    result = logged_in(*args, "--json")
    assert result.exit_code == 4, result.stderr
    summary = result.json
    assert (summary["created"], summary["existing"], summary["failed"]) == (250, 0, 2)
    assert [(f["line"], f["external_id"], f["code"]) for f in summary["failures"]][0] == (
        252, "p0", "DuplicateEntry",
    )  # fmt: skip
    assert summary["failures"][1]["line"] == 253
    assert (tmp_path / "users.csv.failed.csv").exists()

    user = await client.get(
        f"/api/v1/admin/tenants/{tenant['id']}/users/p249",
        headers={"Authorization": f"Bearer {config.load()['token']}"},
    )
    assert user.status_code == 200, user.text
    assert user.json()["plan"] == "vip"


async def test_verify_prints_each_check_and_exits_0_when_the_ledger_is_consistent(
    client: httpx.AsyncClient, logged_in: Any
) -> None:
    tenant = await create_tenant(client)
    result = logged_in("verify", "--tenant", tenant["id"])
    assert result.exit_code == 0, result.stderr
    assert "accounts checked:" in result.stdout
    assert "audit chain: ok" in result.stdout
    assert result.stdout.rstrip().endswith("verify: ok")
    assert logged_in("verify", "--tenant", tenant["id"], "--json").json["ok"] is True


def test_an_http_error_shows_the_services_code_and_message(logged_in: Any, tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user,amount\na,1\n")
    result = logged_in("recharge", "--tenant", str(uuid.uuid4()), "--csv", str(path), "-q")
    assert result.exit_code == 1
    assert result.stderr.endswith("swapmeter admin: HTTP 404 NotFound: Tenant not found\n")
