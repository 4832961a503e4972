"""Tenants in a real browser: create, suspend and reinstate; a new price book version in
the history; tenant admins see their own tenant only; auditors see no write button."""

from __future__ import annotations

import uuid

from tests.dashboard.conftest import Accounts, Ui, unique


async def test_a_platform_admin_creates_suspends_and_reinstates_a_tenant(
    ui: Ui, accounts: Accounts
) -> None:
    await ui.sign_in(accounts.root)
    assert await ui.goto("/dashboard/tenants") == 200
    name, slug = f"Acme {uuid.uuid4().hex[:6]}", unique("acme")
    await ui.page.get_by_label("Name").fill(name)
    await ui.page.get_by_label("Slug (optional)").fill(slug)
    assert await ui.submit("form[action='/dashboard/tenants']") == 200
    assert await ui.page.get_by_role("heading", name=name).is_visible()
    assert await ui.page.locator("#flash").inner_text() == "Tenant created."
    assert await ui.page.locator("#tenant-status").inner_text() == "active"

    ui.page.once("dialog", lambda dialog: dialog.accept())  # "Suspend ...?"
    async with ui.page.expect_navigation():
        await ui.page.get_by_role("button", name="Suspend tenant").click()
    await ui.settle()
    assert await ui.page.locator("#tenant-status").inner_text() == "suspended"
    assert "suspended" in await ui.page.locator("#flash").inner_text()

    async with ui.page.expect_navigation():
        await ui.page.get_by_role("button", name="Reinstate tenant").click()
    await ui.settle()
    assert await ui.page.locator("#tenant-status").inner_text() == "active"
    assert await ui.page.locator("#flash").inner_text() == "Tenant reinstated."
    # The list shows it too, with its status.
    assert await ui.goto(f"/dashboard/tenants?cursor={slug[:-1]}") == 200
    assert await ui.page.get_by_role("link", name=name).is_visible()


async def test_a_new_price_book_version_shows_in_the_history(ui: Ui, accounts: Accounts) -> None:
    await ui.sign_in(accounts.root)
    await ui.goto("/dashboard/tenants")
    name = f"Priced {uuid.uuid4().hex[:6]}"
    await ui.page.get_by_label("Name").fill(name)
    await ui.submit("form[action='/dashboard/tenants']")
    assert await ui.page.locator("#price-history").get_by_text("No version yet").is_visible()

    editor = ui.page.locator("#price-editor")
    await editor.get_by_label("Image (Tokens)").fill("3")
    await editor.get_by_label("Reason").fill("launch prices")
    assert await ui.submit("#price-editor") == 200
    assert await ui.page.locator("#flash").inner_text() == "New price book version saved."
    row = ui.page.locator("#price-history tr[data-version='1']")
    assert "launch prices" in await row.inner_text()
    assert await row.locator("td").nth(1).inner_text() == "3"
    assert "version 1" in await ui.page.locator("#prices-h").inner_text()

    # The same prices again (a second click, a reload of the form): no second version.
    assert await ui.submit("#price-editor") == 200
    assert "no new version" in await ui.page.locator("#flash").inner_text()
    assert await ui.page.locator("#price-history tbody tr").count() == 1

    # A price out of range: the form again, with the contract's message and what was typed.
    await editor.get_by_label("Video, per started second").fill("0")
    assert await ui.submit("#price-editor") == 400
    assert "video_second must be between 1 and" in await ui.page.get_by_role("alert").inner_text()
    assert await editor.get_by_label("Video, per started second").input_value() == "0"


async def test_a_tenant_admin_sees_only_its_own_tenant(ui: Ui, accounts: Accounts) -> None:
    await ui.sign_in(accounts.tenant_admin)
    assert await ui.goto("/dashboard/tenants") == 200
    rows = ui.page.locator("#tenants tbody tr")
    assert await rows.count() == 1
    assert await rows.first.get_attribute("data-tenant") == accounts.tenant_admin.tenant_id
    assert await ui.page.get_by_role("button", name="Create tenant").count() == 0
    assert await ui.goto(f"/dashboard/tenants/{accounts.other_tenant_id}") == 404
    assert await ui.page.get_by_role("heading", name="Not found").is_visible()
    # Its own page: it adds an auditor, then disables it.
    assert await ui.goto(f"/dashboard/tenants/{accounts.tenant_admin.tenant_id}") == 200
    assert await ui.page.get_by_role("button", name="Suspend tenant").count() == 0
    email = f"{unique('aud')}@example.com"
    form = ui.page.locator("#new-admin")
    await form.get_by_label("Email").fill(email)
    await form.get_by_label("Password").fill("correct-horse-battery")
    assert await form.get_by_label("Role").locator("option").all_inner_texts() == ["auditor"]
    assert await ui.submit("#new-admin") == 200
    row = ui.page.locator(f"tr[data-admin='{email}']")
    assert "active" in await row.inner_text()
    ui.page.once("dialog", lambda dialog: dialog.accept())
    async with ui.page.expect_navigation():
        await row.get_by_role("button", name="Disable").click()
    await ui.settle()
    assert "disabled" in await ui.page.locator(f"tr[data-admin='{email}']").inner_text()


async def test_an_auditor_sees_no_write_button_on_tenant_pages(ui: Ui, accounts: Accounts) -> None:
    await ui.sign_in(accounts.auditor)
    tenant = accounts.auditor.tenant_id
    for path in ("/dashboard/tenants", f"/dashboard/tenants/{tenant}"):
        assert await ui.goto(path) == 200
        assert await ui.write_controls() == 0, path
    assert await ui.page.locator("#price-history").is_visible()  # reads the prices
    token = await ui.page.locator("input[name=csrf_token]").first.input_value()
    for path, form in (
        (f"/dashboard/tenants/{tenant}/prices", {"image": "9"}),
        (f"/dashboard/tenants/{tenant}/threshold", {"approval_threshold": "1"}),
        ("/dashboard/tenants", {"name": "Auditors' own"}),
    ):
        answer = await ui.context.request.post(
            ui.base_url + path, form={**form, "csrf_token": token}
        )
        assert answer.status == 403, path
        assert "read-only" in await answer.text()
