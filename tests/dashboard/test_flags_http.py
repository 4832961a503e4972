"""Anomaly rules and flags without a browser: the rules editor's PUT semantics and its
errors, roles (auditors read, write nothing), another tenant's 404, CSRF, a flag resolved
twice (409, shown as a message), filters."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.core.db import Database
from tests.admin.helpers import create_admin, create_tenant, import_users, root_headers
from tests.dashboard.conftest import Account, Accounts
from tests.dashboard.test_ops_http import Browser, _signed_in


@pytest.fixture
async def root(app: FastAPI, accounts: Accounts) -> AsyncIterator[Browser]:
    async for browser in _signed_in(app, accounts.root):
        yield browser


@pytest.fixture
async def tenant_admin(app: FastAPI, accounts: Accounts) -> AsyncIterator[Browser]:
    """A tenant admin of the accounts' tenant (not the flagged ones)."""
    async for browser in _signed_in(app, accounts.tenant_admin):
        yield browser


async def _flagged_tenant(root: Browser, db: Database, users: int = 2) -> tuple[str, list[str]]:
    """A new tenant whose users each have an open flag (a breach written as the swap path
    writes it), the users frozen."""
    tenant = (await create_tenant(root.client))["id"]
    names = [f"flagged-{n}" for n in range(users)]
    await import_users(root.client, tenant, names)
    async with db.session() as s:
        await s.execute(
            text(
                'INSERT INTO anomaly_flags (tenant_id, user_id, rule, observed, "limit", '
                "action, evidence) SELECT u.tenant_id, u.id, 'requests_per_minute', 3, 2, "
                "'freeze', '{\"window_seconds\": 60}' FROM users u WHERE u.tenant_id = :t"
            ),
            {"t": tenant},
        )
        await s.execute(
            text(
                "UPDATE accounts SET status = 'frozen' WHERE kind = 'user' AND user_id IN "
                "(SELECT id FROM users WHERE tenant_id = :t)"
            ),
            {"t": tenant},
        )
        await s.commit()
    return tenant, names


async def _flag_ids(db: Database, tenant: str) -> list[int]:
    async with db.session() as s:
        rows = await s.execute(
            text("SELECT id FROM anomaly_flags WHERE tenant_id = :t ORDER BY id"), {"t": tenant}
        )
        return [r.id for r in rows]


async def test_the_rules_editor_replaces_the_rules_whole(root: Browser) -> None:
    tenant = (await create_tenant(root.client))["id"]
    page = await root.get(f"/dashboard/tenants/{tenant}")
    assert 'id="rules-editor"' in page.text and "no rules set" in page.text
    url = f"/dashboard/tenants/{tenant}/anomaly-rules"
    first = {"max_requests_per_minute": "30", "max_tokens_per_day": "1,000", "action": "flag"}
    saved = await root.post(url, first)
    assert saved.status_code == 303 and saved.headers["location"].endswith("#anomaly")
    api = await root.client.get(
        f"/api/v1/admin/tenants/{tenant}/anomaly-rules", headers=await _root_headers(root)
    )
    body = api.json()
    assert (body["max_requests_per_minute"], body["max_tokens_per_day"]) == (30, 1000)
    assert (body["max_same_source_per_hour"], body["action"], body["version"]) == (None, "flag", 1)

    # PUT semantics: a limit left blank is off.
    await root.post(url, {"max_same_source_per_hour": "5", "action": "freeze"})
    body = (
        await root.client.get(
            f"/api/v1/admin/tenants/{tenant}/anomaly-rules", headers=await _root_headers(root)
        )
    ).json()
    assert (body["max_requests_per_minute"], body["max_same_source_per_hour"]) == (None, 5)
    assert (body["max_tokens_per_day"], body["action"], body["version"]) == (None, "freeze", 2)

    # A refused value: the form again, with the API's message and what was typed.
    refused = await root.post(url, {"max_requests_per_minute": "0", "action": "freeze"})
    assert refused.status_code == 422  # the contract's ValidationError
    assert "max_requests_per_minute" in refused.text and 'value="0"' in refused.text
    unknown = await root.post(url, {"action": "explode"})
    assert unknown.status_code == 422 and "action" in unknown.text


async def _root_headers(root: Browser) -> dict[str, str]:
    return await root_headers(root.client)


async def test_auditors_read_rules_and_flags_and_write_neither(
    app: FastAPI, root: Browser, db: Database
) -> None:
    tenant, names = await _flagged_tenant(root, db)
    made = await create_admin(root.client, tenant, "auditor")
    async for auditor in _signed_in(app, Account(made["email"], made["password"], tenant)):
        page = await auditor.get(f"/dashboard/tenants/{tenant}")
        assert page.status_code == 200 and 'id="rules"' in page.text
        assert "rules-editor" not in page.text
        flags = await auditor.get("/dashboard/flags?status=open")  # its own tenant
        assert flags.status_code == 200 and all(n in flags.text for n in names)
        assert "data-write" not in flags.text and "Resolve" not in flags.text
        flag_id = (await _flag_ids(db, tenant))[0]
        posted = await auditor.post(
            f"/dashboard/flags/{flag_id}/resolve?tenant={tenant}", {"action": "unfreeze"}
        )
        assert posted.status_code == 403
        rules = await auditor.post(
            f"/dashboard/tenants/{tenant}/anomaly-rules", {"action": "freeze"}
        )
        assert rules.status_code == 403
    async with db.session() as s:
        still = await s.execute(
            text("SELECT count(*) FROM anomaly_flags WHERE tenant_id = :t AND status = 'open'"),
            {"t": tenant},
        )
        assert still.scalar_one() == 2


async def test_a_second_resolve_is_a_409_message_and_other_tenants_are_404(
    root: Browser, tenant_admin: Browser, db: Database
) -> None:
    tenant, names = await _flagged_tenant(root, db)
    first, second = await _flag_ids(db, tenant)
    url = f"/dashboard/flags/{first}/resolve?tenant={tenant}&status=open"
    kept = await root.post(url, {"action": "keep_frozen", "note": "fraud"})
    assert kept.status_code == 303
    assert kept.headers["location"].endswith("status=open&flash=flag-keep_frozen")
    again = await root.post(url, {"action": "unfreeze"})
    assert again.status_code == 409
    assert "This flag was resolved already (keep_frozen)" in again.text
    assert f'data-flag="{second}"' in again.text  # the queue, shown with the message
    # Without the CSRF token: refused, nothing resolved.
    no_csrf = await root.post(
        f"/dashboard/flags/{second}/resolve?tenant={tenant}", {"action": "unfreeze"}, csrf=False
    )
    assert no_csrf.status_code == 403
    unknown = await root.post(
        f"/dashboard/flags/{second}/resolve?tenant={tenant}", {"action": "forgive"}
    )
    assert unknown.status_code == 422 and "action" in unknown.text
    # Filters: by user, and by status.
    by_user = await root.get(f"/dashboard/flags?tenant={tenant}&user={names[1]}")
    assert f'data-flag="{second}"' in by_user.text and f'data-flag="{first}"' not in by_user.text
    resolved = await root.get(f"/dashboard/flags?tenant={tenant}&status=resolved")
    assert f'data-flag="{first}"' in resolved.text and f'data-flag="{second}"' not in resolved.text
    assert (await root.get(f"/dashboard/flags?tenant={tenant}&status=nope")).status_code == 400

    # Another tenant's admin: 404 for the queue, the resolve and the rules.
    other = tenant_admin
    assert (await other.get(f"/dashboard/flags?tenant={tenant}")).status_code == 404
    posted = await other.post(
        f"/dashboard/flags/{second}/resolve?tenant={tenant}", {"action": "unfreeze"}
    )
    assert posted.status_code == 404
    rules = await other.post(f"/dashboard/tenants/{tenant}/anomaly-rules", {"action": "flag"})
    assert rules.status_code == 404
    # Its own tenant's queue does not hold the flag either.
    own = await other.post(f"/dashboard/flags/{second}/resolve", {"action": "unfreeze"})
    assert own.status_code == 404
