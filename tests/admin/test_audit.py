"""The audit log: hash-chained appends, refused edits, forged chains detected."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.auth.dependencies import AdminPrincipal
from app.core import audit


def _actor() -> AdminPrincipal:
    return AdminPrincipal(
        id=uuid.uuid4(), email="auditor-test@example.com", role="platform_admin", tenant_id=None
    )


async def test_appends_link_each_record_to_the_one_before(db) -> None:
    tenant = uuid.uuid4()
    async with db.session() as s:
        first = await audit.record(
            s,
            request=None,
            actor=_actor(),
            action="test.first",
            tenant_id=tenant,
            target="x",
            details={"n": 1, "f": 0.5},
        )
        second = await audit.record(
            s,
            request=None,
            actor=None,
            actor_label="system:test",
            action="test.second",
            tenant_id=tenant,
            target=None,
            details={"nested": {"b": [1, 2], "a": "é"}},
        )
    assert second.prev_hash == first.hash
    assert second.id > first.id
    assert len(first.hash) == 64
    async with db.session() as s:
        stored = (
            await s.execute(
                text("SELECT hash, actor FROM audit_log WHERE id = :i"), {"i": second.id}
            )
        ).one()
        assert stored == (second.hash, "system:test")
        assert await audit.verify_chain(s)


async def test_concurrent_appends_keep_one_linear_chain(db) -> None:
    async def append(n: int) -> None:
        async with db.session() as s:
            await audit.record(
                s,
                request=None,
                actor=None,
                action="test.concurrent",
                tenant_id=None,
                target=str(n),
                details={"n": n},
            )

    await asyncio.gather(*(append(n) for n in range(20)))
    async with db.session() as s:
        report = await audit.check_chain(s)
        forks = (
            await s.execute(
                text(
                    "SELECT count(*) FROM (SELECT prev_hash FROM audit_log GROUP BY prev_hash "
                    "HAVING count(*) > 1) f"
                )
            )
        ).scalar_one()
    assert report.ok, report
    assert forks == 0


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET details = '{\"forged\": true}' WHERE id = :i",
        "DELETE FROM audit_log WHERE id = :i",
    ],
)
async def test_the_database_refuses_to_edit_or_delete_audit_rows(db, statement) -> None:
    async with db.session() as s:
        entry = await audit.record(
            s,
            request=None,
            actor=None,
            action="test.immutable",
            tenant_id=None,
            target=None,
            details={},
        )
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.session() as s:
            await s.execute(text(statement), {"i": entry.id})
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.session() as s:
            await s.execute(text("TRUNCATE audit_log"))
    async with db.session() as s:
        assert (
            await s.execute(text("SELECT count(*) FROM audit_log WHERE id = :i"), {"i": entry.id})
        ).scalar_one() == 1


async def test_a_forged_row_breaks_the_chain_and_verify_reports_it(db, client) -> None:
    async with db.session() as s:
        entry = await audit.record(
            s,
            request=None,
            actor=None,
            action="test.forgery-target",
            tenant_id=None,
            target="victim",
            details={"amount": 100},
        )
        await audit.record(
            s,
            request=None,
            actor=None,
            action="test.after",
            tenant_id=None,
            target=None,
            details={},
        )
    # Only a superuser can switch the trigger off; other tests share this database, so the
    # row and the trigger are restored whatever happens.
    async with db.engine.connect() as conn:
        await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        await conn.commit()
        try:
            await conn.execute(
                text("UPDATE audit_log SET details = '{\"amount\": 1000000}' WHERE id = :i"),
                {"i": entry.id},
            )
            await conn.commit()
            async with db.session() as s:
                report = await audit.check_chain(s)
                assert report.ok is False
                assert report.first_bad_id == entry.id
                assert await audit.verify_chain(s) is False
            # A forger who also recomputes this row's hash (holding the key, even) breaks the
            # link to the next one.
            async with db.session() as s:
                forged = (
                    await s.execute(
                        text(
                            "SELECT id, at, actor_id, actor, actor_ip, request_id, action, "
                            "tenant_id, "
                            "target, details, prev_hash, key_id FROM audit_log WHERE id = :i"
                        ),
                        {"i": entry.id},
                    )
                ).one()
            fields = audit._canonical_fields(
                id=forged.id,
                at=forged.at,
                actor_id=forged.actor_id,
                actor=forged.actor,
                actor_ip=forged.actor_ip,
                request_id=forged.request_id,
                action=forged.action,
                tenant_id=forged.tenant_id,
                target=forged.target,
                details=forged.details,
            )
            await conn.execute(
                text("UPDATE audit_log SET hash = :h WHERE id = :i"),
                {
                    "h": audit.default_keyring().row_hash(forged.prev_hash, forged.key_id, fields),
                    "i": entry.id,
                },
            )
            await conn.commit()
            async with db.session() as s:
                report = await audit.check_chain(s)
            assert report.ok is False
            assert report.first_bad_id == entry.id + 1
            verify = await client.get("/api/v1/admin/ledger/verify")
            if verify.status_code != 404:  # the ledger's verify endpoint, once mounted
                from tests.admin.helpers import root_headers

                verify = await client.get(
                    "/api/v1/admin/ledger/verify", headers=await root_headers(client)
                )
                assert verify.json()["audit_chain_ok"] is False
        finally:
            await conn.rollback()
            await conn.execute(
                text("UPDATE audit_log SET details = :d, hash = :h WHERE id = :i"),
                {"d": '{"amount": 100}', "h": entry.hash, "i": entry.id},
            )
            await conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
            await conn.commit()
    async with db.session() as s:
        assert await audit.verify_chain(s)
