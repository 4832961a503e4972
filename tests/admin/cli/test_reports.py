"""``swapmeter admin usage`` and ``swapmeter admin ledger export`` against a real server."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.admin.helpers import create_tenant, import_users, root_headers

TODAY = datetime.now(UTC).date().isoformat()


async def _recharged_tenant(client: httpx.AsyncClient) -> str:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["ann", "bob", "cy"])
    for n, amount in enumerate((5, 7)):
        response = await client.post(
            f"/api/v1/admin/tenants/{tenant['id']}/recharges/bulk",
            json={"users": ["ann", "bob", "cy"], "amount": amount, "reason": "cli"},
            headers={**await root_headers(client), "Idempotency-Key": f"cli-report-{n}"},
        )
        assert response.status_code == 200, response.text
    return str(tenant["id"])


async def test_usage_prints_a_table_json_and_csv_that_agree_with_the_api(
    client: httpx.AsyncClient, logged_in: Any, tmp_path: Path
) -> None:
    tenant = await _recharged_tenant(client)
    days = ("--from", TODAY, "--to", TODAY)

    as_json = logged_in("usage", "--tenant", tenant, *days, "--json")
    assert as_json.exit_code == 0, as_json.stderr
    (day,) = as_json.json["items"]
    assert (day["day"], day["recharged"], day["consumed"]) == (TODAY, 36, 0)
    api = await client.get(
        f"/api/v1/admin/tenants/{tenant}/usage",
        params={"from": TODAY, "to": TODAY},
        headers=await root_headers(client),
    )
    assert as_json.json["items"] == api.json()["items"]

    target = tmp_path / "usage.csv"
    as_csv = logged_in("usage", "--tenant", tenant, *days, "--csv", str(target))
    assert as_csv.exit_code == 0, as_csv.stderr
    (row,) = list(csv.DictReader(io.StringIO(target.read_text())))
    assert row["day"] == TODAY and row["recharged"] == "36"

    table = logged_in("usage", "--tenant", tenant, *days)
    assert table.exit_code == 0, table.stderr
    header, today, total = table.stdout.splitlines()
    assert header.split()[:3] == ["day", "recharged", "granted"]
    assert today.split()[:2] == [TODAY, "36"] and total.split()[:2] == ["total", "36"]


async def test_ledger_export_streams_every_entry_to_the_file(
    client: httpx.AsyncClient, logged_in: Any, tmp_path: Path
) -> None:
    tenant = await _recharged_tenant(client)
    out = tmp_path / "ledger.csv"
    result = logged_in(
        "ledger", "export", "--tenant", tenant, "--from", TODAY, "--to", TODAY,
        "--out", str(out), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    entries = list(csv.DictReader(io.StringIO(out.read_text())))
    assert sorted((e["user"], e["kind"], e["amount"]) for e in entries) == sorted(
        (user, "recharge", str(amount)) for user in ("ann", "bob", "cy") for amount in (5, 7)
    )
    assert result.json["rows"] == 6 and result.json["file"] == str(out)
    assert not out.with_name("ledger.csv.part").exists()


def test_a_bad_day_or_a_backwards_range_is_one_line(logged_in: Any, tmp_path: Path) -> None:
    tenant = "00000000-0000-0000-0000-000000000001"
    bad = logged_in("usage", "--tenant", tenant, "--from", "2026-02-30", "--to", TODAY)
    assert bad.exit_code == 2
    assert bad.stderr == "swapmeter admin: --from must be a day as YYYY-MM-DD, got '2026-02-30'\n"
    out = tmp_path / "x.csv"
    backwards = logged_in(
        "ledger", "export", "--tenant", tenant, "--from", TODAY, "--to", "2000-01-01",
        "--out", str(out),
    )  # fmt: skip
    assert backwards.exit_code == 1
    assert backwards.stderr.startswith("swapmeter admin: HTTP 400 InvalidDateRange: ")
    assert not out.exists() and not out.with_name("x.csv.part").exists()
