"""Migration 0016: holds and jobs from before it were held at multiplier 1, price books
gain an optional peak (checked by the database too), and a downgrade removes it all."""

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
def database_at_0015(servers: tuple[str, str]) -> Iterator[str]:
    with scratch_database_at(servers[0], "0015", "0016") as url:
        yield url


async def _a_hold_and_a_book_before_0016(url: str) -> str:
    tenant = (await _sql(url, "INSERT INTO tenants (name, slug) VALUES ('t', 't') RETURNING id"))[
        0
    ]["id"]
    account = (
        await _sql(
            url,
            "INSERT INTO accounts (tenant_id, kind) VALUES ($1, 'issuance') RETURNING id",
            tenant,
        )
    )[0]["id"]
    await _sql(
        url,
        "INSERT INTO holds (tenant_id, account_id, reference, amount) VALUES ($1, $2, 'job:x', 3)",
        tenant,
        account,
    )
    await _sql(
        url,
        "INSERT INTO price_books (tenant_id, version, image, video_second, enhance_surcharge,"
        " enhance_video_second_surcharge) VALUES ($1, 1, 2, 10, 1, 5)",
        tenant,
    )
    return str(tenant)


def _columns(url: str, table: str) -> set[str]:
    rows = asyncio.run(
        _sql(url, "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table)
    )
    return {r["column_name"] for r in rows}


def test_old_holds_read_multiplier_1_and_peaks_are_checked_and_removed_on_downgrade(
    database_at_0015: str,
) -> None:
    url = database_at_0015
    tenant = asyncio.run(_a_hold_and_a_book_before_0016(url))
    command.upgrade(alembic_config(url), "0016")
    [hold] = asyncio.run(_sql(url, "SELECT amount, multiplier FROM holds"))
    assert (hold["amount"], str(hold["multiplier"])) == (3, "1.00")
    [book] = asyncio.run(
        _sql(url, "SELECT peak_queue_depth_at_least, peak_multiplier FROM price_books")
    )
    assert (book["peak_queue_depth_at_least"], book["peak_multiplier"]) == (None, None)
    insert = (
        "INSERT INTO price_books (tenant_id, version, image, video_second, enhance_surcharge,"
        " enhance_video_second_surcharge, peak_queue_depth_at_least, peak_multiplier)"
        " VALUES ($1, $2, 2, 10, 1, 5, $3, $4)"
    )
    asyncio.run(_sql(url, insert, tenant, 2, 100, 1.5))
    for version, depth, multiplier in ((3, 100, 10.5), (4, 0, 2), (5, None, 2), (6, 100, 1)):
        with pytest.raises(asyncpg.CheckViolationError):
            asyncio.run(_sql(url, insert, tenant, version, depth, multiplier))
    command.downgrade(alembic_config(url), "0015")
    assert "multiplier" not in _columns(url, "holds") | _columns(url, "jobs")
    assert not {"peak_multiplier", "peak_queue_depth_at_least"} & _columns(url, "price_books")
