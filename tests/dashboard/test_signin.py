"""Signing in and out of the dashboard in a real browser, and what a session allows."""

from __future__ import annotations

from tests.dashboard.conftest import Accounts, Ui


async def test_sign_in_lands_on_the_page_asked_for(ui: Ui, accounts: Accounts) -> None:
    assert await ui.goto("/dashboard?period=30d") == 200
    assert ui.page.url.startswith(ui.base_url + "/dashboard/login?next=")
    await ui.page.get_by_label("Email").fill(accounts.root.email)
    await ui.page.get_by_label("Password").fill(accounts.root.password)
    assert await ui.submit("form[action='/dashboard/login']") == 200
    assert ui.page.url == ui.base_url + "/dashboard?period=30d"
    assert await ui.page.get_by_role("heading", name="Overview").is_visible()
    assert await ui.page.get_by_text("platform admin").is_visible()
    cookie = await ui.session_cookie()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert not cookie["secure"]  # plain http in tests; see test_sessions for https


async def test_wrong_password_says_so_and_signs_nobody_in(ui: Ui, accounts: Accounts) -> None:
    await ui.goto("/dashboard/login")
    await ui.page.get_by_label("Email").fill(accounts.tenant_admin.email)
    await ui.page.get_by_label("Password").fill("not-the-password")
    assert await ui.submit("form[action='/dashboard/login']") == 401
    assert await ui.page.get_by_role("alert").inner_text() == "Wrong email or password."
    assert await ui.page.get_by_label("Email").input_value() == accounts.tenant_admin.email
    assert not [c for c in await ui.context.cookies() if c["name"] == "swapmeter_dashboard"]
    assert await ui.goto("/dashboard") == 200
    assert "/dashboard/login" in ui.page.url


async def test_sign_out_ends_the_session_on_the_server(ui: Ui, accounts: Accounts) -> None:
    await ui.sign_in(accounts.tenant_admin)
    old_cookie = await ui.session_cookie()
    await ui.sign_out()
    assert "/dashboard/login" in ui.page.url
    assert await ui.page.get_by_text("You have signed out.").is_visible()
    # The browser forgot the cookie; one kept elsewhere is refused by the server too.
    await ui.context.add_cookies([old_cookie])
    assert await ui.goto("/dashboard") == 200
    assert "/dashboard/login" in ui.page.url
    response = await ui.context.request.get(ui.base_url + "/dashboard", max_redirects=0)
    assert response.status == 303


async def test_a_post_without_its_csrf_token_is_refused(ui: Ui, accounts: Accounts) -> None:
    await ui.sign_in(accounts.tenant_admin)
    # The sign-out form with its token removed, as a forged form would come.
    await ui.page.locator("input[name=csrf_token]").evaluate_all(
        "inputs => inputs.forEach(i => i.remove())"
    )
    async with ui.page.expect_navigation() as navigation:
        await ui.page.get_by_role("button", name="Sign out").click()
    await ui.snap()
    assert (await navigation.value).status == 403  # type: ignore[union-attr]
    assert "did not come from this site" in await ui.page.get_by_role("alert").inner_text()
    for token in (None, "0" * 64):
        form = {"csrf_token": token} if token else {}
        answer = await ui.context.request.post(ui.base_url + "/dashboard/logout", form=form)
        assert answer.status == 403
    # Nothing was done: still signed in.
    assert await ui.goto("/dashboard") == 200
    assert ui.page.url == ui.base_url + "/dashboard"
