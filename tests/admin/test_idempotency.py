"""Idempotency-Key: replays, reused keys, concurrent duplicates, scopes and expiry."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from fastapi import Request
from sqlalchemy import text

from app.core.deps import DBSession
from app.core.idempotency.service import purge_expired_keys, run_idempotent
from tests.admin.helpers import asgi_client, insert_tenant, mini_app


def _counting_app(settings, db):  # type: ignore[no-untyped-def]
    """POST /things/{scope} creates a tenant row per run (a visible side effect) slowly."""
    app = mini_app(settings, db)
    runs: list[str] = []

    @app.post("/things/{scope}")
    async def create_thing(scope: str, request: Request, session: DBSession):  # type: ignore[no-untyped-def]
        body = await request.json()

        async def operation() -> tuple[int, dict]:
            runs.append(scope)
            await asyncio.sleep(0.05)  # let duplicates pile up behind the key
            slug = f"idem-{uuid.uuid4().hex[:12]}"
            await session.execute(
                text("INSERT INTO tenants (name, slug) VALUES ('idem', :s)"), {"s": slug}
            )
            return 201, {"slug": slug, "echo": body}

        return await run_idempotent(session, request, scope=scope, operation=operation)

    return app, runs


async def test_a_replay_returns_the_first_response_and_changes_nothing(settings, db) -> None:
    app, runs = _counting_app(settings, db)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    async with asgi_client(app) as c:
        first = await c.post("/things/tenant:a", json={"n": 1}, headers=key)
        again = await c.post("/things/tenant:a", json={"n": 1}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(runs) == 1


async def test_the_same_json_written_another_way_is_a_replay(settings, db) -> None:
    """A client that serialises its request again (keys in another order, other spacing)
    sends the same request: it is replayed, not refused as a reused key."""
    app, runs = _counting_app(settings, db)
    key = {"Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"}
    async with asgi_client(app) as c:
        first = await c.post(
            "/things/tenant:a", content=b'{"users":["u1"],"amount":5}', headers=key
        )
        again = await c.post(
            "/things/tenant:a", content=b'{ "amount": 5, "users": [ "u1" ] }', headers=key
        )
        other = await c.post(
            "/things/tenant:a", content=b'{"amount":5,"users":["u2"]}', headers=key
        )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    assert len(runs) == 1


async def test_a_key_stored_with_its_bodys_bytes_hash_still_replays(settings, db) -> None:
    """Keys stored before JSON bodies were compared by content hold the SHA-256 of the
    bytes: the same bytes sent again are still a replay."""
    app, runs = _counting_app(settings, db)
    body = b'{ "n": 1 }'
    async with db.session() as s:
        await s.execute(
            text(
                "INSERT INTO idempotency_keys (scope, key, method_path, request_hash, "
                "response_status, response_body) VALUES ('tenant:a', 'old-key', "
                "'POST /things/tenant:a', :h, 201, '{\"slug\": \"first\"}')"
            ),
            {"h": hashlib.sha256(body).hexdigest()},
        )
    headers = {"Idempotency-Key": "old-key", "Content-Type": "application/json"}
    async with asgi_client(app) as c:
        again = await c.post("/things/tenant:a", content=body, headers=headers)
    assert again.status_code == 201 and again.json() == {"slug": "first"}
    assert runs == []


async def test_the_same_key_with_another_body_is_409_idempotency_key_reused(settings, db) -> None:
    app, runs = _counting_app(settings, db)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    async with asgi_client(app) as c:
        await c.post("/things/tenant:a", json={"n": 1}, headers=key)
        reused = await c.post("/things/tenant:a", json={"n": 2}, headers=key)
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "IdempotencyKeyReused"
    assert len(runs) == 1


async def test_concurrent_duplicates_run_the_operation_once(settings, db) -> None:
    app, runs = _counting_app(settings, db)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    async with asgi_client(app) as c:
        responses = await asyncio.gather(
            *(c.post("/things/tenant:c", json={"n": 1}, headers=key) for _ in range(10))
        )
    assert [r.status_code for r in responses] == [201] * 10
    assert len({r.json()["slug"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 9
    assert len(runs) == 1
    async with db.session() as s:
        created = (
            await s.execute(
                text("SELECT count(*) FROM tenants WHERE slug = :s"),
                {"s": responses[0].json()["slug"]},
            )
        ).scalar_one()
    assert created == 1


async def test_keys_of_different_scopes_are_independent(settings, db) -> None:
    app, runs = _counting_app(settings, db)
    key = {"Idempotency-Key": "shared-key-" + uuid.uuid4().hex}
    async with asgi_client(app) as c:
        a = await c.post("/things/user:1", json={"n": 1}, headers=key)
        b = await c.post("/things/user:2", json={"n": 1}, headers=key)
    assert a.json()["slug"] != b.json()["slug"]
    assert "idempotent-replayed" not in b.headers
    assert runs == ["user:1", "user:2"]


async def test_without_a_key_every_call_runs_and_bad_keys_are_400(settings, db) -> None:
    app, runs = _counting_app(settings, db)
    async with asgi_client(app) as c:
        await c.post("/things/s", json={})
        await c.post("/things/s", json={})
        too_long = await c.post("/things/s", json={}, headers={"Idempotency-Key": "k" * 256})
        empty = await c.post("/things/s", json={}, headers={"Idempotency-Key": ""})
    assert len(runs) == 2
    for response in (too_long, empty):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "InvalidIdempotencyKey"


async def test_a_failed_operation_keeps_no_key_so_the_client_can_retry(settings, db) -> None:
    app = mini_app(settings, db)
    attempts: list[int] = []

    @app.post("/flaky")
    async def flaky(request: Request, session: DBSession):  # type: ignore[no-untyped-def]
        async def operation() -> tuple[int, dict]:
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("transient failure")
            return 200, {"ok": True}

        return await run_idempotent(session, request, scope="tenant:flaky", operation=operation)

    key = {"Idempotency-Key": uuid.uuid4().hex}
    async with asgi_client(app) as c:
        failed = await c.post("/flaky", json={}, headers=key)
        retried = await c.post("/flaky", json={}, headers=key)
    assert failed.status_code == 500
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers


async def test_keys_older_than_the_ttl_are_purged_and_recent_ones_kept(db) -> None:
    scope = f"tenant:{await insert_tenant(db)}"
    async with db.session() as s:
        await s.execute(
            text(
                "INSERT INTO idempotency_keys (scope, key, method_path, request_hash, created_at) "
                "VALUES (:s, 'old', 'POST /x', 'h', now() - interval '49 hours'), "
                "(:s, 'recent', 'POST /x', 'h', now() - interval '23 hours')"
            ),
            {"s": scope},
        )
    async with db.session() as s:
        # A TTL under 24 hours is raised to 24: keys are kept at least a day.
        assert await purge_expired_keys(s, ttl_hours=1) >= 1
        assert await purge_expired_keys(s, ttl_hours=48) == 0
        left = (
            (
                await s.execute(
                    text("SELECT key FROM idempotency_keys WHERE scope = :s"), {"s": scope}
                )
            )
            .scalars()
            .all()
        )
    assert left == ["recent"]
