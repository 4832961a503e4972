"""The database role for the service that docs/security.md gives: the migrations run as
the tables' owner, the service as a role that can append to the audit log and the ledger
and read them, but neither change them nor switch their triggers off."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app.core import audit
from app.core.db import Database
from app.migrate import upgrade_to_head
from billing import ledger_verify
from tests.conftest import REPO, server_sql


def _sql_blocks() -> list[list[str]]:
    """The statements of each SQL block of the page's section on the service's role."""
    page = (REPO / "docs" / "security.md").read_text()
    section = page.split("## A database role for the service", 1)[1]
    return [
        [s.strip() for s in block.split(";") if s.strip()]
        for block in re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    ]


@pytest.fixture
def roles(servers: tuple[str, str]) -> Iterator[dict[str, str]]:
    """The page's roles and database, under names of this test's own (roles are
    cluster-wide); yields the owner's and the service's URLs."""
    server_url, _ = servers
    tag = uuid.uuid4().hex[:10]
    names = {
        "swapmeter_owner": f"swapmeter_owner_{tag}",
        "swapmeter_app": f"swapmeter_app_{tag}",
        "swapmeter": f"swapmeter_roles_{tag}",
    }

    def named(statement: str) -> str:
        return re.sub(
            r"\b(swapmeter_owner|swapmeter_app|swapmeter)\b", lambda m: names[m[1]], statement
        )

    as_superuser, as_owner = _sql_blocks()
    for statement in as_superuser:
        server_sql(server_url, named(statement))
    base = make_url(server_url).set(database=names["swapmeter"])
    owner = base.set(username=names["swapmeter_owner"]).render_as_string(hide_password=False)
    service = base.set(username=names["swapmeter_app"]).render_as_string(hide_password=False)
    try:
        upgrade_to_head(owner)
        for statement in as_owner:
            server_sql(owner, named(statement))
        yield {"owner": owner, "service": service}
    finally:
        server_sql(server_url, f'DROP DATABASE IF EXISTS "{names["swapmeter"]}" WITH (FORCE)')
        for role in ("swapmeter_app", "swapmeter_owner"):
            server_sql(server_url, f'DROP ROLE IF EXISTS "{names[role]}"')


async def test_the_service_role_appends_and_reads_but_cannot_rewrite(roles) -> None:
    service = Database(roles["service"], pool_size=1, max_overflow=1)
    try:
        async with service.session() as s:
            await audit.record(
                s,
                request=None,
                actor=None,
                action="test.service-role",
                tenant_id=None,
                target=None,
                details={"n": 1},
            )
        async with service.session() as s:
            result = await ledger_verify.verify(s, None)
        assert result.ok and result.audit_chain_ok
    finally:
        await service.dispose()

    conn = await asyncpg.connect(roles["service"].replace("+asyncpg", ""))
    try:
        for statement in (
            "UPDATE audit_log SET details = '{}'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
            "UPDATE ledger_entries SET amount = amount",
            "DELETE FROM ledger_entries",
            "SET session_replication_role = replica",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner"):
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        # It keeps the rights the rest of the service needs.
        assert await conn.fetchval("SELECT has_table_privilege('accounts', 'UPDATE')")
        assert await conn.fetchval("SELECT has_table_privilege('jobs', 'DELETE')")
    finally:
        await conn.close()
