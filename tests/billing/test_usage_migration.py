"""Migration 0012: the ledger and jobs already there are folded into the daily rollups once,
the triggers count what comes after, and a downgrade removes it all."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from alembic import command

from app.migrate import alembic_config, migration_scripts
from tests.billing.conftest import fetch as _fetch
from tests.billing.conftest import scratch_database_at

# The revision 0012 follows (re-chained as other branches' migrations land before it).
BEFORE = migration_scripts().get_revision("0012").down_revision
assert isinstance(BEFORE, str)


@pytest.fixture
def database_before_0012(servers: tuple[str, str]) -> Iterator[str]:
    with scratch_database_at(servers[0], BEFORE, "0012") as url:
        yield url


def _sql(url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    return asyncio.run(_fetch(url, statement, *args))


ENTRY = """
INSERT INTO ledger_entries (tenant_id, from_account_id, to_account_id, amount, kind, hold_id,
                            balance_after, held_after, created_at)
VALUES ($1, $2, $3, $4, $5, $6, 0, 0, '2026-11-30 23:59:59+00')
"""


def _rollups(url: str) -> list[tuple[Any, ...]]:
    rows = _sql(
        url,
        "SELECT day::text, metric, sum(count)::int, sum(tokens)::int FROM ("
        " SELECT day, metric, count, tokens FROM usage_daily UNION ALL"
        " SELECT day, metric, count, tokens FROM usage_deltas) u GROUP BY 1, 2 ORDER BY 1, 2",
    )
    return [tuple(r) for r in rows]


def test_0012_folds_the_existing_ledger_and_counts_new_entries_then_downgrades(
    database_before_0012: str,
) -> None:
    url = database_before_0012
    tenant = (_sql(url, "INSERT INTO tenants (name, slug) VALUES ('t', 't') RETURNING id"))[0]["id"]
    user = (
        _sql(
            url, "INSERT INTO users (tenant_id, external_id) VALUES ($1, 'u') RETURNING id", tenant
        )
    )[0]["id"]
    accounts = []
    for user_id, kind in ((user, "user"), (None, "issuance")):
        row = _sql(
            url,
            "INSERT INTO accounts (tenant_id, user_id, kind) VALUES ($1, $2, $3) RETURNING id",
            tenant,
            user_id,
            kind,
        )
        accounts.append(row[0]["id"])
    account, issuance = accounts
    _sql(url, ENTRY, tenant, issuance, account, 9, "recharge", None)
    _sql(url, ENTRY, tenant, account, issuance, 2, "adjustment", None)
    _sql(url, ENTRY, tenant, account, account, 3, "hold", 1)

    command.upgrade(alembic_config(url), "0012")
    before = [
        ("2026-11-30", "active_users", 1, 0),
        ("2026-11-30", "ledger:adjustment", 1, -2),
        ("2026-11-30", "ledger:hold", 1, 3),
        ("2026-11-30", "ledger:recharge", 1, 9),
    ]
    assert _rollups(url) == before

    # After the upgrade the trigger counts: a second hold of the same user that day is no
    # second active user.
    _sql(url, ENTRY, tenant, account, account, 4, "hold", 2)
    assert _rollups(url) == [
        before[0], before[1], ("2026-11-30", "ledger:hold", 2, 7), before[3]
    ]  # fmt: skip

    command.downgrade(alembic_config(url), BEFORE)
    tables = _sql(url, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'usage_%'")
    assert tables == []
    _sql(url, ENTRY, tenant, issuance, account, 1, "recharge", None)  # no trigger left
    command.upgrade(alembic_config(url), "0012")
    assert ("2026-11-30", "ledger:recharge", 2, 10) in _rollups(url)
