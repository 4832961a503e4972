"""The keyed audit chain and its anchor: a chain rewritten with the owner's rights, or
cut short, fails verify; rotated keys keep verifying their rows; a wrong key does not.

Each test breaks a chain on purpose, so each runs in a scratch database of its own: the
run's shared audit log stays whole for every other test.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from app.core import audit
from app.core.audit import Keyring
from app.core.audit_anchor import AnchorPlaces
from app.core.db import Database
from app.core.settings import Settings
from app.core.storage import LocalResultStore, cleanup
from app.migrate import upgrade_to_head
from billing import ledger_verify
from tests.conftest import server_sql

OLD = Keyring({"k1": b"old-secret-" + b"1" * 32})
ROTATED = Keyring({"k2": b"new-secret-" + b"2" * 32, "k1": b"old-secret-" + b"1" * 32})
COLUMNS = (
    "id, at, actor_id, actor, actor_ip, request_id, action, tenant_id, target, details, "
    "prev_hash, key_id, hash"
)


@pytest.fixture
def scratch_url(servers: tuple[str, str]) -> Iterator[str]:
    server_url, _ = servers
    name = f"swapmeter_audit_{uuid.uuid4().hex[:12]}"
    server_sql(server_url, f'CREATE DATABASE "{name}"')
    url = server_url.rsplit("/", 1)[0] + "/" + name
    upgrade_to_head(url)
    yield url
    server_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def scratch(scratch_url: str) -> AsyncIterator[Database]:
    database = Database(scratch_url, pool_size=2, max_overflow=2)
    yield database
    await database.dispose()


async def _append(db: Database, n: int, keys: Keyring | None) -> list[audit.AuditRecord]:
    written = []
    async with db.session() as s:
        for i in range(n):
            written.append(
                await audit.record(
                    s,
                    request=None,
                    actor=None,
                    action="test.audit",
                    tenant_id=uuid.uuid4(),
                    target=f"t{i}",
                    details={"amount": 100 + i},
                    keys=keys,
                )
            )
    return written


async def _legacy_rows(db: Database, n: int) -> None:
    """Rows as the code before audit keys wrote them: key_id NULL, a plain sha256."""
    async with db.session() as s:
        for i in range(n):
            entry = await audit.record(
                s,
                request=None,
                actor=None,
                action="test.legacy",
                tenant_id=None,
                target=str(i),
                details={"i": i},
                keys=OLD,
            )
            legacy = audit.chain_hash(entry.prev_hash, audit.canonical_record(entry))
            await _as_owner(s, "key_id = NULL, hash = :h", entry.id, h=legacy)


async def _as_owner(s, assignments: str, row_id: int, **values) -> None:  # type: ignore[no-untyped-def]
    """What the table's owner can do: switch the append-only triggers off, edit a row."""
    await s.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
    await s.execute(
        text(f"UPDATE audit_log SET {assignments} WHERE id = :i"), {"i": row_id, **values}
    )
    await s.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


async def _rewrite_from(db: Database, first_id: int, forge: str) -> None:
    """Edit row ``first_id`` and recompute every later hash, as a forger without the key
    can: with the old unkeyed function, or with a guessed key under the same id."""
    guessed = Keyring({"k1": b"a guess at the key"})
    async with db.session() as s:
        rows = (
            await s.execute(
                text(f"SELECT {COLUMNS} FROM audit_log WHERE id >= :i ORDER BY id"),
                {"i": first_id},
            )
        ).all()
        prev_hash = rows[0].prev_hash
        for n, r in enumerate(rows):
            fields = audit.canonical_record(r)
            if n == 0:
                fields["details"] = {"amount": 1_000_000}
            key_id = None if forge == "unkeyed" else r.key_id
            new_hash = guessed.row_hash(prev_hash, key_id, fields)
            await _as_owner(
                s,
                "details = CAST(:d AS jsonb), prev_hash = :p, key_id = :k, hash = :h",
                r.id,
                d=audit.canonical(fields["details"]),
                p=prev_hash,
                k=key_id,
                h=new_hash,
            )
            prev_hash = new_hash


@pytest.mark.parametrize("forge", ["unkeyed", "guessed key"])
async def test_a_chain_rewritten_with_the_owners_rights_fails_verify(scratch, forge) -> None:
    rows = await _append(scratch, 4, OLD)
    async with scratch.session() as s:
        assert (await audit.check_chain(s, keys=OLD)).ok
    await _rewrite_from(scratch, rows[1].id, forge)
    async with scratch.session() as s:
        report = await audit.check_chain(s, keys=OLD)
    assert report.ok is False
    assert report.first_bad_id == rows[1].id
    expected = "unkeyed row follows keyed" if forge == "unkeyed" else "does not match its hash"
    assert expected in (report.problem or "")


async def test_the_whole_keyed_chain_rewritten_unkeyed_fails_against_the_anchor(
    scratch, redis, tmp_path: Path
) -> None:
    rows = await _append(scratch, 3, OLD)
    places = AnchorPlaces(redis, None, f"test-{uuid.uuid4().hex}")
    async with scratch.session() as s:
        await places.publish(s, None)
    await _rewrite_from(scratch, rows[0].id, "unkeyed")  # the keyless chain links up again
    anchor = await places.newest()
    async with scratch.session() as s:
        report = await audit.check_chain(s, keys=OLD, anchor=anchor)
    await redis.delete(places.redis_key)
    assert report.ok is False and report.first_bad_id == rows[-1].id
    assert "was rewritten" in (report.problem or "")


async def test_an_upgrade_keeps_the_chain_whole_and_old_rows_stay_covered(scratch) -> None:
    await _legacy_rows(scratch, 3)
    keyed = await _append(scratch, 2, OLD)
    async with scratch.session() as s:
        kinds = (await s.execute(text("SELECT key_id FROM audit_log ORDER BY id"))).scalars()
        assert list(kinds) == [None, None, None, "k1", "k1"]
        assert (await audit.check_chain(s, keys=OLD)).ok
    # Recomputing from a legacy row on needs the key for the keyed rows after it.
    await _rewrite_from(scratch, keyed[0].id - 2, "guessed key")
    async with scratch.session() as s:
        report = await audit.check_chain(s, keys=OLD)
    assert report.ok is False and report.first_bad_id == keyed[0].id


async def test_a_truncated_chain_fails_verify_against_its_anchor(
    scratch, redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = await _append(scratch, 5, None)  # the settings' key, which verify uses
    store = LocalResultStore(tmp_path, "", "signing-secret")
    places = AnchorPlaces(redis, store, f"test-{uuid.uuid4().hex}")
    try:
        async with scratch.session() as s:
            with caplog.at_level(logging.INFO, "app.core.audit_anchor"):
                seen = await places.publish(s, None)
        assert seen is not None and seen.id == rows[-1].id
        assert f"audit head anchored: id={rows[-1].id} hash={rows[-1].hash}" in caplog.text
        # The anchor outlives the results' retention.
        await cleanup(store, older_than=timedelta(0))
        assert (tmp_path / places.store_key).is_file()

        async with scratch.session() as s:
            await s.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            await s.execute(text("DELETE FROM audit_log WHERE id > :i"), {"i": rows[2].id})
            await s.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        async with scratch.session() as s:
            assert (await audit.check_chain(s)).ok  # the rest links up
            caplog.clear()
            await places.publish(s, seen)  # the head moved back: the anchor stays
        assert "no longer holds its anchor" in caplog.text
        # Redis's copy, then the store's alone (Redis lost its copy).
        for copy in (AnchorPlaces(redis, None, places.name), places):
            if copy is places:
                await redis.delete(places.redis_key)
            async with scratch.session() as s:
                result = await ledger_verify.verify(s, None, copy)
            problem = result.audit_chain_problem or ""
            assert result.audit_chain_ok is False and result.ok is False, copy
            assert f"row {rows[-1].id} was anchored" in problem and "rows were removed" in problem
    finally:
        await redis.delete(places.redis_key)


async def test_rows_signed_by_a_rotated_key_verify_and_a_wrong_key_fails(scratch) -> None:
    await _append(scratch, 2, OLD)
    newer = await _append(scratch, 2, ROTATED)
    assert [r.key_id for r in newer] == ["k2", "k2"]
    async with scratch.session() as s:
        assert (await audit.check_chain(s, keys=ROTATED)).ok
        without_old = await audit.check_chain(s, keys=Keyring({"k2": b"new-secret-" + b"2" * 32}))
        wrong_old = await audit.check_chain(
            s, keys=Keyring({"k2": b"new-secret-" + b"2" * 32, "k1": b"not the old key"})
        )
    assert without_old.ok is False and "'k1', which is not configured" in (
        without_old.problem or ""
    )
    assert wrong_old.ok is False and wrong_old.problem == "row content does not match its hash"


def test_the_audit_key_is_refused_in_production_when_default_or_short() -> None:
    real = {"environment": "production", "jwt_secret": "j" * 40}
    with pytest.raises(ValueError, match="SWAPMETER_AUDIT_KEY must be set"):
        Settings(_env_file=None, **real)
    with pytest.raises(ValueError, match="at least 32 characters"):
        Settings(_env_file=None, **real, audit_key="short")
    settings = Settings(
        _env_file=None,
        **real,
        audit_key="a" * 32,
        audit_key_id="2026-12",
        audit_old_keys="k1:old-secret, k0:older",
    )
    assert list(settings.audit_keys()) == ["2026-12", "k1", "k0"]
    for bad in ("k0", "k0:", "k1:again", "bad id:x"):
        with pytest.raises(ValueError, match="audit key|AUDIT_OLD_KEYS"):
            Settings(_env_file=None, audit_old_keys=bad)


async def test_workers_anchor_the_head_and_verify_checks_the_chain_against_it(
    app, db, redis, client
) -> None:
    from app.jobs.worker import Worker
    from tests.admin.helpers import root_headers

    settings = app.state.settings
    (entry,) = await _append(db, 1, None)
    await Worker(settings, db, redis=redis, cleanup=False).housekeeping()
    anchor = await AnchorPlaces.of(settings, redis, None).newest()
    assert anchor is not None and anchor.id >= entry.id
    assert REGISTRY.get_sample_value("swapmeter_audit_head_id") == anchor.id
    assert REGISTRY.get_sample_value("swapmeter_audit_head_hash52") == int(anchor.hash[:13], 16)
    verify = await client.get("/api/v1/admin/ledger/verify", headers=await root_headers(client))
    assert verify.status_code == 200
    assert (verify.json()["audit_chain_ok"], verify.json()["audit_chain_problem"]) == (True, None)
    assert f"swapmeter_audit_head_id {float(anchor.id)}" in (await client.get("/metrics")).text


@pytest.mark.parametrize(
    "kept", [b"not json", b"[1, 2]", b'{"id": 3, "hash": "zz", "key_id": null, "at": 0}']
)
async def test_an_unreadable_anchor_is_set_aside_with_a_warning(
    redis, kept, caplog: pytest.LogCaptureFixture
) -> None:
    places = AnchorPlaces(redis, None, f"test-{uuid.uuid4().hex}")
    await redis.set(places.redis_key, kept)
    try:
        with caplog.at_level(logging.WARNING, "app.core.audit_anchor"):
            assert await places.newest() is None
        assert "could not be read from Redis" in caplog.text
    finally:
        await redis.delete(places.redis_key)
