"""``swapmeter admin recharge`` against a real server: bad rows reported by line and code,
good rows applied exactly once, reruns and interrupted runs apply nothing twice."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from app.core.db import Database
from app.core.settings import REPO_ROOT
from tests.admin.helpers import create_tenant, import_users, root_headers

USERS = [f"u{i:03d}" for i in range(300)]


async def _tenant_with_users(client: httpx.AsyncClient, users: list[str] = USERS) -> str:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], users)
    return str(tenant["id"])


async def _freeze(client: httpx.AsyncClient, tenant_id: str, user: str) -> None:
    response = await client.post(
        f"/api/v1/admin/tenants/{tenant_id}/users/{user}/freeze",
        json={"reason": "test"},
        headers=await root_headers(client),
    )
    assert response.status_code == 200, response.text


async def _balances(db: Database, tenant_id: str) -> dict[str, int]:
    async with db.session() as s:
        rows = await s.execute(
            text(
                "SELECT u.external_id, a.balance FROM users u JOIN accounts a ON a.user_id = u.id "
                "WHERE u.tenant_id = :t"
            ),
            {"t": tenant_id},
        )
        return {r.external_id: r.balance for r in rows}


async def _written(db: Database, tenant_id: str) -> tuple[int, int]:
    """Ledger entries and batches of the tenant."""
    async with db.session() as s:
        row = (
            await s.execute(
                text(
                    "SELECT (SELECT count(*) FROM ledger_entries WHERE tenant_id = :t), "
                    "(SELECT count(*) FROM recharge_batches WHERE tenant_id = :t)"
                ),
                {"t": tenant_id},
            )
        ).one()
    return row[0], row[1]


def _write_csv(path: Path, rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as out:
        csv.writer(out).writerows(rows)
    return path


def _mixed_file(tmp_path: Path) -> Path:
    """Header, 300 good rows, then bad ones on known lines (line 1 is the header)."""
    rows: list[list[Any]] = [["user", "amount"]]
    rows += [[u, 7] for u in USERS]  # lines 2..301
    rows += [
        ["u000", 7],  # line 302: DuplicateEntry
        ["ghost", 7],  # line 303: UserNotFound (server)
        ["frozen", 7],  # line 304: AccountFrozen (server)
        ["lucky", "seven"],  # line 305: InvalidAmount, not an integer
        ["lucky2", "-3"],  # line 306: InvalidAmount, not positive
    ]
    return _write_csv(tmp_path / "recharge.csv", rows)


async def test_recharge_reports_bad_rows_by_line_and_applies_the_good_ones_exactly_once(
    client: httpx.AsyncClient, db: Database, logged_in: Any, tmp_path: Path
) -> None:
    tenant_id = await _tenant_with_users(client, [*USERS, "frozen", "lucky", "lucky2"])
    await _freeze(client, tenant_id, "frozen")
    path = _mixed_file(tmp_path)

    first = logged_in(
        "recharge", "--tenant", tenant_id, "--csv", str(path), "--chunk-size", "100",
        "--reason", "gift", "--json",
    )  # fmt: skip
    assert first.exit_code == 4, first.stderr  # done, with failed rows
    summary = first.json
    assert (summary["rows"], summary["applied"], summary["failed"]) == (305, 300, 5)
    assert summary["tokens"] == 300 * 7 and summary["chunks"] == 4  # 302 rows pass the local checks
    assert [(f["line"], f["user"], f["code"]) for f in summary["failures"]] == [
        (302, "u000", "DuplicateEntry"),
        (303, "ghost", "UserNotFound"),
        (304, "frozen", "AccountFrozen"),
        (305, "lucky", "InvalidAmount"),
        (306, "lucky2", "InvalidAmount"),
    ]
    balances = await _balances(db, tenant_id)
    assert all(balances[u] == 7 for u in USERS)
    assert balances["frozen"] == balances["lucky"] == balances["lucky2"] == 0

    failed = list(csv.reader((tmp_path / "recharge.csv.failed.csv").open()))
    assert failed[0] == ["user", "amount", "line", "code", "message"]
    assert [r[:4] for r in failed[1:3]] == [
        ["u000", "7", "302", "DuplicateEntry"],
        ["ghost", "7", "303", "UserNotFound"],
    ]
    assert failed[4][:4] == ["lucky", "seven", "305", "InvalidAmount"]

    # The same file again: every chunk is a replay, nothing is credited twice.
    entries_before = await _written(db, tenant_id)
    again = logged_in(
        "recharge", "--tenant", tenant_id, "--csv", str(path), "--chunk-size", "100",
        "--reason", "gift",
    )  # fmt: skip
    assert again.exit_code == 4, again.stderr
    assert "4 of 4 chunks already applied earlier" in again.stdout
    assert "line 303: UserNotFound" in again.stderr
    assert await _written(db, tenant_id) == entries_before
    assert await _balances(db, tenant_id) == balances


async def test_a_wrong_header_is_refused_with_the_line_and_nothing_is_sent(
    client: httpx.AsyncClient, db: Database, logged_in: Any, tmp_path: Path
) -> None:
    tenant_id = await _tenant_with_users(client, ["a"])
    path = _write_csv(tmp_path / "bad.csv", [["customer", "tokens"], ["a", 5]])
    result = logged_in("recharge", "--tenant", tenant_id, "--csv", str(path))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "swapmeter admin: bad CSV line 1: unknown column 'customer'; the header must be "
        "user,amount[,expires_at][,label]"
    )
    assert await _written(db, tenant_id) == (0, 0)


async def test_dry_run_checks_every_row_on_the_server_and_applies_nothing(
    client: httpx.AsyncClient, db: Database, logged_in: Any, tmp_path: Path
) -> None:
    tenant_id = await _tenant_with_users(client, [*USERS, "frozen", "lucky", "lucky2"])
    await _freeze(client, tenant_id, "frozen")
    path = _mixed_file(tmp_path)
    before = await _written(db, tenant_id)
    result = logged_in(
        "recharge", "--tenant", tenant_id, "--csv", str(path), "--chunk-size", "100",
        "--dry-run", "--json",
    )  # fmt: skip
    assert result.exit_code == 4, result.stderr
    summary = result.json
    assert summary["dry_run"] is True and summary["applied"] == 0
    assert summary["would_apply"] == 300 and summary["tokens"] == 2100
    assert {(f["line"], f["code"]) for f in summary["failures"]} >= {
        (303, "UserNotFound"),
        (304, "AccountFrozen"),
    }
    assert await _written(db, tenant_id) == before
    assert set((await _balances(db, tenant_id)).values()) == {0}


async def test_a_file_with_grant_columns_credits_grants_one_chunk_per_expiry_and_label(
    client: httpx.AsyncClient, db: Database, logged_in: Any, tmp_path: Path
) -> None:
    tenant_id = await _tenant_with_users(client, ["a", "b", "c", "d", "e", "f", "g"])
    path = _write_csv(
        tmp_path / "grants.csv",
        [
            ["user", "amount", "expires_at", "label"],
            ["a", 5, "2099-01-31T00:00:00Z", "winter"],  # line 2
            ["b", 5, "31/01/2099", "winter"],  # line 3: InvalidDate
            ["c", 6, "", ""],  # line 4: plain Tokens
            ["d", 7, "2099-01-31T00:00:00z", "winter"],  # line 5: the same group as a
            ["e", 8, "2099-06-30T00:00:00+02:00", ""],  # line 6: no campaign
            ["f", 9, "2020-01-01T00:00:00Z", "old"],  # line 7: InvalidDate (past)
            ["g", 9, "", "lost"],  # line 8: InvalidLabel (no expiry)
        ],
    )
    dry = logged_in("recharge", "--tenant", tenant_id, "--csv", str(path), "--dry-run", "--json")
    assert dry.exit_code == 4, dry.stderr
    failures = [(f["line"], f["code"]) for f in dry.json["failures"]]
    assert failures == [(3, "InvalidDate"), (7, "InvalidDate"), (8, "InvalidLabel")]
    assert (dry.json["would_apply"], dry.json["tokens"]) == (4, 26)
    assert await _written(db, tenant_id) == (0, 0)

    real = logged_in("recharge", "--tenant", tenant_id, "--csv", str(path), "--json")
    assert real.exit_code == 4, real.stderr
    assert (real.json["applied"], real.json["tokens"], real.json["chunks"]) == (4, 26, 3)
    async with db.session() as s:
        rows = await s.execute(
            text(
                "SELECT u.external_id, e.kind, e.amount, g.expires_at, g.label"
                " FROM ledger_entries e JOIN accounts a ON a.id = e.to_account_id"
                " JOIN users u ON u.id = a.user_id"
                " LEFT JOIN token_grants g ON g.entry_id = e.id"
                " WHERE e.tenant_id = :t ORDER BY u.external_id"
            ),
            {"t": tenant_id},
        )
        entries = [(r.external_id, r.kind, r.amount, r.expires_at, r.label) for r in rows]
    winter = datetime(2099, 1, 31, tzinfo=UTC)
    assert entries == [
        ("a", "grant", 5, winter, "winter"),
        ("c", "recharge", 6, None, None),
        ("d", "grant", 7, winter, "winter"),
        ("e", "grant", 8, datetime(2099, 6, 29, 22, tzinfo=UTC), None),
    ]
    again = logged_in("recharge", "--tenant", tenant_id, "--csv", str(path), "--json")
    assert again.json["chunks_replayed"] == 3
    assert (await _written(db, tenant_id))[0] == 4


async def test_a_run_interrupted_by_ctrl_c_and_started_again_credits_each_user_once(
    client: httpx.AsyncClient, db: Database, logged_in: Any, live_url: str, tmp_path: Path
) -> None:
    users = USERS[:200]
    tenant_id = await _tenant_with_users(client, users)
    path = _write_csv(tmp_path / "r.csv", [["user", "amount"], *[[u, 3] for u in users]])
    args = ["recharge", "--tenant", tenant_id, "--csv", str(path), "--chunk-size", "2"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "admin", *args, "--quiet",
        cwd=REPO_ROOT,
        env={**os.environ},  # the login, the config folder and SWAPMETER_URL of `cli`
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while (await _written(db, tenant_id))[1] < 1:  # the first chunk has landed
        assert process.returncode is None, await process.communicate()
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 130, (out, err)
    assert b"run the same command again" in out
    partly = await _balances(db, tenant_id)
    assert 0 < sum(partly.values()) < 3 * len(users)

    resumed = logged_in(*args, "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.json["chunks_replayed"] >= 1
    assert await _balances(db, tenant_id) == {u: 3 for u in users}


async def test_a_list_of_users_with_one_amount_and_a_chunk_over_the_threshold_waits(
    client: httpx.AsyncClient, db: Database, logged_in: Any, tmp_path: Path
) -> None:
    users = USERS[:30]
    tenant_id = await _tenant_with_users(client, users)
    patched = await client.patch(
        f"/api/v1/admin/tenants/{tenant_id}",
        json={"approval_threshold": 100},
        headers=await root_headers(client),
    )
    assert patched.status_code == 200, patched.text
    path = tmp_path / "ids.txt"  # no header: one user id per line
    path.write_text("\n".join([*users[:20], "nobody", *users[20:]]) + "\n")

    # Chunks of 20 users x 5 = 100 Tokens: within the threshold, applied.
    small = logged_in(
        "recharge", "--tenant", tenant_id, "--csv", str(path), "--amount", "5",
        "--chunk-size", "20", "--json",
    )  # fmt: skip
    assert small.exit_code == 4, small.stderr
    assert small.json["applied"] == 30
    assert [(f["line"], f["user"], f["code"]) for f in small.json["failures"]] == [
        (21, "nobody", "UserNotFound")
    ]
    assert await _balances(db, tenant_id) == {u: 5 for u in users}

    # One chunk of 30 x 5 = 150 Tokens: waits for a second admin, nothing credited yet.
    big = logged_in(
        "recharge", "--tenant", tenant_id, "--csv", str(path), "--amount", "5",
        "--run-name", "second", "--json",
    )  # fmt: skip
    assert big.exit_code == 4, big.stderr
    assert (big.json["applied"], big.json["pending_approval"]) == (0, 30)
    assert len(big.json["pending_batches"]) == 1
    assert await _balances(db, tenant_id) == {u: 5 for u in users}

    # The same run with another amount reuses its keys: refused, not applied again.
    other = logged_in(
        "recharge", "--tenant", tenant_id, "--csv", str(path), "--amount", "6",
        "--chunk-size", "20", "-q",
    )  # fmt: skip
    assert other.exit_code == 1
    assert "HTTP 409 IdempotencyKeyReused" in other.stderr
    assert await _balances(db, tenant_id) == {u: 5 for u in users}
