"""Migration 0013: expiry entries written before it read as ``expire``, grant lots and
batches get a label, and a downgrade gives the code before it its ``expiry`` back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from alembic import command

from app.migrate import alembic_config
from tests.billing.conftest import fetch as _sql
from tests.billing.conftest import scratch_database_at


@pytest.fixture
def database_at_0012(servers: tuple[str, str]) -> Iterator[str]:
    with scratch_database_at(servers[0], "0012", "0013") as url:
        yield url


async def _expiry_entry_before_0013(url: str) -> None:
    tenant = (await _sql(url, "INSERT INTO tenants (name, slug) VALUES ('t', 't') RETURNING id"))[
        0
    ]["id"]
    ids = await _sql(
        url,
        "INSERT INTO accounts (tenant_id, kind) VALUES ($1, 'issuance'), ($1, 'revenue')"
        " RETURNING id",
        tenant,
    )
    issuance, revenue = ids[0]["id"], ids[1]["id"]
    await _sql(
        url,
        "INSERT INTO ledger_entries (tenant_id, from_account_id, to_account_id, amount, kind,"
        " balance_after, held_after) VALUES ($1, $2, $3, 4, 'expiry', 0, 0)",
        tenant,
        revenue,
        issuance,
    )


async def _kinds(url: str) -> list[str]:
    return [r["kind"] for r in await _sql(url, "SELECT kind FROM ledger_entries ORDER BY id")]


def test_expiry_entries_become_expire_and_come_back_on_downgrade(database_at_0012: str) -> None:
    url = database_at_0012
    asyncio.run(_expiry_entry_before_0013(url))
    command.upgrade(alembic_config(url), "0013")
    assert asyncio.run(_kinds(url)) == ["expire"]
    metrics = asyncio.run(
        _sql(url, "SELECT DISTINCT metric FROM usage_deltas UNION SELECT metric FROM usage_daily")
    )
    assert {r["metric"] for r in metrics} == {"ledger:expire"}  # the rollups follow
    columns = asyncio.run(
        _sql(
            url,
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE column_name = 'label' AND table_name IN ('token_grants', 'recharge_batches')",
        )
    )
    assert {r["table_name"] for r in columns} == {"token_grants", "recharge_batches"}
    # The ledger is still append-only, and the old kind is no longer accepted.
    with pytest.raises(asyncpg.PostgresError):
        asyncio.run(_sql(url, "UPDATE ledger_entries SET amount = 5"))
    with pytest.raises(asyncpg.CheckViolationError):
        asyncio.run(
            _sql(
                url,
                "INSERT INTO ledger_entries (tenant_id, from_account_id, to_account_id, amount,"
                " kind, balance_after, held_after) SELECT tenant_id, from_account_id,"
                " to_account_id, 1, 'expiry', 0, 0 FROM ledger_entries",
            )
        )

    command.downgrade(alembic_config(url), "0012")
    assert asyncio.run(_kinds(url)) == ["expiry"]
    gone = asyncio.run(
        _sql(
            url,
            "SELECT 1 FROM information_schema.columns WHERE column_name IN ('label', 'expires_at')"
            " AND table_name IN ('token_grants', 'recharge_batches')",
        )
    )
    assert len(gone) == 1  # token_grants.expires_at, from before 0013
