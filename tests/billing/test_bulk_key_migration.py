"""Migration 0009: the Idempotency-Keys of batches made before it keep replaying, from the
one key store, and a downgrade gives the code before it what it looks up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from alembic import command
from sqlalchemy import text

from app.core.db import Database
from app.core.errors import IdempotencyKeyReused
from app.core.idempotency.service import Fingerprint, KeyClaim, purge_expired_keys
from app.migrate import alembic_config
from billing import bulk_recharge
from tests.billing.conftest import fetch as _sql
from tests.billing.conftest import scratch_database_at

HASH_A, HASH_B, HASH_OTHER = "a" * 64, "b" * 64, "f" * 64


@pytest.fixture
def database_at_0008(servers: tuple[str, str]) -> Iterator[str]:
    with scratch_database_at(servers[0], "0008", "0009") as url:
        yield url


async def _arrange(url: str) -> dict[str, Any]:
    """A tenant with four keyed batches as the code before 0009 left them."""
    tenant = (await _sql(url, "INSERT INTO tenants (name, slug) VALUES ('t', 't') RETURNING id"))[
        0
    ]["id"]
    scope, path = f"tenant:{tenant}", f"POST /api/v1/admin/tenants/{tenant}/recharges/bulk"
    batches = {}
    for key, request_hash in [
        ("stored", HASH_A),  # its key still in the HTTP store
        ("purged", HASH_B),  # its key purged after the TTL
        ("before-0006", None),  # purged, and made before batches had a fingerprint
        ("taken", HASH_A),  # purged, then used by a price change
    ]:
        batches[key] = (
            await _sql(
                url,
                "INSERT INTO recharge_batches (tenant_id, status, mode, requested, succeeded,"
                " failed, total_amount, failed_users, reason, created_by_email, idempotency_key,"
                " request_hash, applied_at) VALUES ($1, 'applied', 'soft', 2, 1, 1, 5,"
                ' \'[{"user": "x", "code": "UserNotFound", "message": "m", "index": 1}]\','
                " 'launch', 'ops@example.com', $2, $3, now()) RETURNING id",
                tenant,
                key,
                request_hash,
            )
        )[0]["id"]
    insert_key = (
        "INSERT INTO idempotency_keys (scope, key, method_path, request_hash, response_status,"
        " response_body, created_at) VALUES ($1, $2, $3, $4, 200, $5, now() - interval '1 hour')"
    )
    await _sql(url, insert_key, scope, "stored", path, HASH_A, '{"first": "answer"}')
    pricing = f"PUT /api/v1/admin/tenants/{tenant}/pricing"
    await _sql(url, insert_key, scope, "taken", pricing, HASH_OTHER, '{"image": 7}')
    return {"tenant": tenant, "scope": scope, "path": path, "batches": batches}


def test_keys_of_batches_made_before_0009_keep_replaying_from_the_one_store(
    database_at_0008: str,
) -> None:
    url = database_at_0008
    world = asyncio.run(_arrange(url))
    command.upgrade(alembic_config(url), "head")
    asyncio.run(_check_replays(url, world))

    # Back to 0008: every batch carries its key again, as the code before looks it up there,
    # and the store holds no key without a fingerprint (which that code cannot read).
    command.downgrade(alembic_config(url), "0008")
    batches = asyncio.run(
        _sql(url, "SELECT idempotency_key, request_hash FROM recharge_batches ORDER BY 1")
    )
    assert [(r[0], r[1]) for r in batches] == [
        ("before-0006", None),
        ("new", HASH_OTHER),
        ("purged", HASH_B),
        ("stored", HASH_A),
        ("taken", HASH_A),
    ]
    keys = asyncio.run(_sql(url, "SELECT key FROM idempotency_keys ORDER BY 1"))
    assert [r[0] for r in keys] == ["new", "purged", "stored"]
    command.upgrade(alembic_config(url), "head")


async def _check_replays(url: str, world: dict[str, Any]) -> None:
    database = Database(url)

    def claim(key: str, request_hash: str, *, permanent: bool = False) -> KeyClaim:
        fingerprint = Fingerprint.of_digest(request_hash)
        return KeyClaim(world["scope"], key, world["path"], fingerprint, permanent=permanent)

    try:
        async with database.session() as s:
            report = await bulk_recharge.get_batch(s, world["tenant"], world["batches"]["purged"])
            purged = await claim("purged", HASH_B).find(s)
            stored = await claim("stored", HASH_A).find(s)
            before_0006 = await claim("before-0006", HASH_OTHER).find(s)
            with pytest.raises(IdempotencyKeyReused):
                await claim("purged", HASH_OTHER).find(s)
            with pytest.raises(IdempotencyKeyReused):  # the price change keeps its key
                await claim("taken", HASH_A).find(s)
        # A replay answers the batch's report, as the batch's own key used to.
        assert purged is not None and purged.stored and purged.status == 200
        assert purged.body == orjson.loads(orjson.dumps(report.as_dict()))
        assert stored is not None and stored.body == {"first": "answer"}
        assert before_0006 is not None
        assert before_0006.body["batch_id"] == str(world["batches"]["before-0006"])

        # A batch made now, as the bulk route makes it: a permanent key, none on the batch.
        batch = (
            await _sql(
                url,
                "INSERT INTO recharge_batches (tenant_id, status, mode, requested) "
                "VALUES ($1, 'applied', 'soft', 1) RETURNING id",
                world["tenant"],
            )
        )[0]["id"]
        async with database.session() as s:
            new = claim("new", HASH_OTHER, permanent=True)
            assert await new.take(s) is None
            await new.store_answer(s, 200, {"batch_id": str(batch)})

        # Kept for good: a purge long after leaves the batches' keys, not the price change's.
        async with database.session() as s:
            await s.execute(
                text("UPDATE idempotency_keys SET created_at = now() - interval '90 days'")
            )
            assert await purge_expired_keys(s, ttl_hours=48) == 1
        rows = await _sql(url, "SELECT key, permanent FROM idempotency_keys ORDER BY key")
        assert [(r[0], r[1]) for r in rows] == [
            ("before-0006", True),
            ("new", True),
            ("purged", True),
            ("stored", True),
        ]
    finally:
        await database.dispose()
