"""The users pages: the list (search, sorts, pages), a user's page and its writes (API key
shown once, freeze and unfreeze, an adjustment that a double submit applies once), and
what auditors and other tenants' admins get. Browser tests, then plain HTTP ones."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from tests.admin.helpers import (
    asgi_client,
    create_admin,
    create_tenant,
    import_users,
    root_headers,
)
from tests.dashboard.conftest import Account, Accounts, Ui, unique

_TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


async def _user(client: httpx.AsyncClient, tenant_id: str, external_id: str) -> dict[str, Any]:
    response = await client.get(
        f"/api/v1/admin/tenants/{tenant_id}/users/{external_id}",
        headers=await root_headers(client),
    )
    assert response.status_code == 200, response.text
    return response.json()


async def _recharge(
    client: httpx.AsyncClient, tenant_id: str, users: list[str], amount: int
) -> None:
    response = await client.post(
        f"/api/v1/admin/tenants/{tenant_id}/recharges/bulk",
        json={"users": users, "amount": amount},
        headers=await root_headers(client),
    )
    assert response.status_code == 200 and response.json()["status"] == "applied"


async def test_the_list_searches_sorts_and_pages(
    ui: Ui, accounts: Accounts, client_session: httpx.AsyncClient
) -> None:
    tenant = await create_tenant(client_session, name="Users list tenant")
    admin = await create_admin(client_session, tenant["id"], "tenant_admin")
    ids = [f"shop-{n:03d}" for n in range(60)] + ["other-1"]
    await import_users(client_session, tenant["id"], ids)
    await _recharge(client_session, tenant["id"], ["shop-007"], 900)
    await ui.sign_in(Account(admin["email"], admin["password"], tenant["id"]))
    await ui.goto("/dashboard/users")
    rows = ui.page.locator("#users tbody tr")
    assert await rows.count() == 50  # a page
    await ui.page.get_by_role("link", name="Next page").click()
    await ui.settle()
    assert await rows.count() == 11
    assert await rows.last.locator("td").first.inner_text() == "shop-059"
    await ui.page.get_by_label("External id starts with").fill("shop-00")
    await ui.page.get_by_label("Sort").select_option("-balance")
    await ui.submit("form[role=search]")
    assert await rows.count() == 10
    first = rows.first.locator("td")
    assert (
        await first.nth(0).inner_text() == "shop-007" and await first.nth(1).inner_text() == "900"
    )
    await rows.first.get_by_role("link").click()
    await ui.settle()
    assert await ui.page.get_by_role("heading", name="User shop-007").is_visible()
    assert await ui.page.locator("[data-metric=available]").inner_text() == "900"
    assert await ui.page.locator("[data-metric=plan]").inner_text() == "none"
    ledger = ui.page.locator("#ledger tbody tr")
    assert await ledger.count() == 1
    assert "+900" in await ledger.first.inner_text()


async def test_a_new_api_key_is_shown_once_and_can_be_revoked(
    ui: Ui, accounts: Accounts, client_session: httpx.AsyncClient
) -> None:
    external_id = unique("keyed")
    await import_users(client_session, accounts.tenant_admin.tenant_id or "", [external_id])
    await ui.sign_in(accounts.tenant_admin)
    await ui.goto(f"/dashboard/users/{external_id}")
    await ui.page.get_by_label("Key name").fill("mobile app")
    assert await ui.submit("#api-key-form") == 200
    key = await ui.page.locator("#new-api-key").input_value()
    assert key and await ui.page.get_by_text("shown only this once").is_visible()
    # The key signs in to the API.
    assert (
        await client_session.get("/api/v1/balance", headers={"Authorization": f"Bearer {key}"})
    ).status_code == 200
    await ui.page.reload()
    await ui.snap()
    assert await ui.page.locator("#new-api-key").count() == 0
    assert await ui.page.locator("#key-gone").is_visible()
    assert key not in await ui.page.content()
    await ui.page.get_by_role("link", name=f"Back to {external_id}").click()
    await ui.settle()
    assert key not in await ui.page.content()
    row = ui.page.locator("#api-keys tbody tr", has_text="mobile app")
    ui.page.once("dialog", lambda dialog: dialog.accept())
    await row.get_by_role("button", name="Revoke").click()
    await ui.settle()
    assert await ui.page.locator("#flash").inner_text() == "API key revoked: it no longer signs in."
    assert "revoked" in await row.inner_text()
    assert (
        await client_session.get("/api/v1/balance", headers={"Authorization": f"Bearer {key}"})
    ).status_code == 401


async def test_freeze_and_unfreeze_with_a_reason(
    ui: Ui, accounts: Accounts, client_session: httpx.AsyncClient
) -> None:
    tenant_id = accounts.tenant_admin.tenant_id or ""
    external_id = unique("icy")
    await import_users(client_session, tenant_id, [external_id])
    await ui.sign_in(accounts.tenant_admin)
    await ui.goto(f"/dashboard/users/{external_id}")
    await ui.page.locator("#freeze-form input[name=reason]").fill("chargeback")
    assert await ui.submit("#freeze-form") == 200
    assert (await ui.page.locator("#flash").inner_text()).startswith("The user is frozen")
    assert (await _user(client_session, tenant_id, external_id))["status"] == "frozen"
    assert await ui.page.get_by_role("heading", name=f"User {external_id} (frozen)").is_visible()
    await ui.page.locator("#freeze-form input[name=reason]").fill("cleared by support")
    assert await ui.submit("#freeze-form") == 200
    assert await ui.page.locator("#flash").inner_text() == "The user is active again."
    assert (await _user(client_session, tenant_id, external_id))["status"] == "active"


async def test_an_adjustment_applies_once_however_often_it_is_sent(
    ui: Ui, accounts: Accounts, client_session: httpx.AsyncClient
) -> None:
    tenant_id = accounts.tenant_admin.tenant_id or ""
    external_id = unique("adjusted")
    await import_users(client_session, tenant_id, [external_id])
    await ui.sign_in(accounts.tenant_admin)
    await ui.goto(f"/dashboard/users/{external_id}")
    form = ui.page.locator("#adjust-form")
    # A debit past the balance: refused, the form shown again with the contract's message.
    await form.get_by_label("Amount").fill("-5")
    await form.get_by_label("Reason").fill("typo")
    assert await ui.submit("#adjust-form") == 402
    assert await ui.page.locator("[data-error=adjust]").is_visible()
    await form.get_by_label("Amount").fill("250")
    await form.get_by_label("Reason").fill("goodwill")
    fields = {
        name: await form.locator(f"[name={name}]").input_value()
        for name in ("csrf_token", "idempotency_key", "amount", "reason")
    }
    async with ui.page.expect_navigation():
        await form.get_by_role("button", name="Apply adjustment").dblclick()
    await ui.snap()
    assert await ui.page.locator("#flash").inner_text() == "Adjustment applied."
    assert await ui.page.locator("[data-metric=balance]").inner_text() == "250"
    # The same form sent again (a reload of the POST, a second click without script).
    action = ui.base_url + await form.get_attribute("action")  # type: ignore[operator]
    again = await ui.context.request.post(action, form=fields)
    assert again.ok and "was applied already: nothing was applied again" in await again.text()
    assert (await _user(client_session, tenant_id, external_id))["balance"] == 250


# -- roles, without a browser ---------------------------------------------------------------


@asynccontextmanager
async def signed_in(app: FastAPI, email: str, password: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app signed in to the dashboard (its cookies kept)."""
    async with asgi_client(app) as browser:
        page = await browser.get("/dashboard/login")
        answer = await browser.post(
            "/dashboard/login",
            data={"email": email, "password": password, "csrf_token": csrf(page)},
        )
        assert answer.status_code == 303
        yield browser


def csrf(page: httpx.Response) -> str:
    return _TOKEN.search(page.text).group(1)  # type: ignore[union-attr]


async def test_auditors_see_no_user_write_control_and_their_posts_are_refused(
    app: FastAPI, client: httpx.AsyncClient, accounts: Accounts
) -> None:
    tenant_id = accounts.auditor.tenant_id or ""
    external_id = unique("watched")
    await import_users(client, tenant_id, [external_id])
    async with signed_in(app, accounts.auditor.email, accounts.auditor.password) as c:
        listing = await c.get("/dashboard/users")
        assert listing.status_code == 200 and "data-write" not in listing.text
        page = await c.get(f"/dashboard/users/{external_id}")
        assert page.status_code == 200 and external_id in page.text
        assert "data-write" not in page.text and "Apply adjustment" not in page.text
        token = csrf(page)
        for what, form in (
            ("adjust", {"amount": "5", "reason": "x", "idempotency_key": str(uuid.uuid4())}),
            ("freeze", {"reason": "x"}),
            ("api-keys", {"name": "x"}),
        ):
            answer = await c.post(
                f"/dashboard/users/{external_id}/{what}", data={**form, "csrf_token": token}
            )
            assert answer.status_code == 403, what
    assert (await _user(client, tenant_id, external_id))["balance"] == 0


async def test_another_tenants_user_is_404_and_a_form_needs_its_csrf_token(
    app: FastAPI, client: httpx.AsyncClient, accounts: Accounts
) -> None:
    stranger = unique("stranger")
    await import_users(client, accounts.other_tenant_id, [stranger])
    admin = accounts.tenant_admin
    async with signed_in(app, admin.email, admin.password) as c:
        other = f"?tenant={accounts.other_tenant_id}"
        assert (await c.get(f"/dashboard/users/{stranger}{other}")).status_code == 404
        assert (await c.get(f"/dashboard/users{other}")).status_code == 404
        # Asked in its own tenant, the stranger is no user of it.
        assert (await c.get(f"/dashboard/users/{stranger}")).status_code == 404
        page = await c.get("/dashboard/users")
        posted = await c.post(
            f"/dashboard/users/{stranger}/freeze{other}",
            data={"reason": "x", "csrf_token": csrf(page)},
        )
        assert posted.status_code == 404
        own = unique("own")
        await import_users(client, admin.tenant_id or "", [own])
        no_token = await c.post(f"/dashboard/users/{own}/freeze", data={"reason": "x"})
        assert no_token.status_code == 403
    assert (await _user(client, accounts.other_tenant_id, stranger))["status"] == "active"
