"""Roles in the dashboard, as in the Admin API: tenants' reach and the auditors' read-only."""

from __future__ import annotations

from tests.dashboard.conftest import Accounts, Ui


async def test_a_tenant_admin_gets_404_for_another_tenant(ui: Ui, accounts: Accounts) -> None:
    await ui.sign_in(accounts.tenant_admin)
    assert await ui.goto(f"/dashboard?tenant={accounts.other_tenant_id}") == 404
    assert await ui.page.get_by_role("heading", name="Not found").is_visible()
    assert await ui.goto(f"/dashboard/example?tenant={accounts.other_tenant_id}") == 404
    # Its own tenant, named or not, is there; and it may write to it.
    assert await ui.goto(f"/dashboard?tenant={accounts.tenant_admin.tenant_id}") == 200
    assert await ui.page.get_by_role("heading", name="Overview: Dashboard tenant").is_visible()
    assert await ui.goto("/dashboard/example") == 200
    assert await ui.write_controls() == 1
    assert await ui.submit("[data-write]") == 200
    assert ui.page.url.endswith("/dashboard/example?written=1")


async def test_an_auditor_sees_no_write_button_and_cannot_write(ui: Ui, accounts: Accounts) -> None:
    await ui.sign_in(accounts.auditor)
    assert await ui.page.get_by_text("auditor", exact=True).is_visible()
    for path in ("/dashboard", "/dashboard?period=today", "/dashboard/example"):
        assert await ui.goto(path) == 200
        assert await ui.write_controls() == 0, path
    # The write posted anyway, with the auditor's own valid CSRF token: refused.
    token = await ui.page.locator("input[name=csrf_token]").first.input_value()
    answer = await ui.context.request.post(
        ui.base_url + "/dashboard/example/write", form={"csrf_token": token}
    )
    assert answer.status == 403
    assert "read-only" in await answer.text()


async def test_a_platform_admin_chooses_any_tenant(ui: Ui, accounts: Accounts) -> None:
    await ui.sign_in(accounts.root)
    assert await ui.page.get_by_text("Choose a tenant to see its figures.").is_visible()
    await ui.page.get_by_label("Tenant").select_option(accounts.other_tenant_id)
    await ui.page.wait_for_url(f"**tenant={accounts.other_tenant_id}*")
    await ui.settle()
    assert await ui.page.get_by_role("heading", name="Overview: Someone else's tenant").is_visible()
