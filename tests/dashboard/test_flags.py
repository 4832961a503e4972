"""Anomaly rules and flags in a real browser: rules set on the tenant's page, a real
breach (swaps over ``max_requests_per_minute``) counted on the overview and listed on the
flags page, an auditor who sees it with no resolve button (and whose posted resolve is
refused), then a platform admin who resolves it with "unfreeze": the user is active
again and may swap."""

from __future__ import annotations

import base64

import httpx

from app.core.db import Database
from tests.admin.helpers import create_admin
from tests.dashboard.conftest import Account, Accounts, Ui
from tests.jobs.conftest import Customer, face, make_customer

OBAMA = base64.b64encode(face("obama.jpg")).decode()
TARGET = base64.b64encode(face("obama_small.jpg")).decode()


async def _swap(client: httpx.AsyncClient, customer: Customer) -> httpx.Response:
    """A swap answered at once (202: no worker runs it here)."""
    return await client.post(
        "/api/v1/swap-face",
        json={"source": OBAMA, "target": TARGET},
        headers={**customer.headers, "Prefer": "wait=0"},
    )


async def _cancel(client: httpx.AsyncClient, customer: Customer, job_ids: list[str]) -> None:
    """The queued swaps go (no worker runs them here): their Tokens are released."""
    for job_id in job_ids:
        response = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=customer.headers)
        assert response.status_code == 200, response.text


async def test_a_breach_is_flagged_counted_and_resolved_with_unfreeze(
    ui: Ui, accounts: Accounts, client_session: httpx.AsyncClient, db: Database
) -> None:
    customer = await make_customer(client_session, db, tokens=10)
    tenant = customer.tenant_id
    made = await create_admin(client_session, tenant, "auditor")
    auditor = Account(made["email"], made["password"], tenant)

    # The rules, from the tenant's page.
    await ui.sign_in(accounts.root)
    assert await ui.goto(f"/dashboard/tenants/{tenant}#anomaly") == 200
    editor = ui.page.locator("#rules-editor")
    await editor.get_by_label("Swaps per user per minute").fill("2")
    await editor.get_by_label("On a breach").select_option("freeze")
    assert await ui.submit("#rules-editor") == 200
    assert (await ui.page.locator("#flash").inner_text()).startswith("Anomaly rules saved")
    limit = ui.page.locator("#rules [data-rule=max_requests_per_minute] td")
    assert await limit.inner_text() == "2"

    # Two swaps go through; the third breaks the rule: refused, the user frozen, flagged.
    jobs = []
    for _ in range(2):
        response = await _swap(client_session, customer)
        assert response.status_code == 202, response.text
        jobs.append(response.json()["job_id"])
    third = await _swap(client_session, customer)
    assert third.status_code == 403 and third.json()["error"]["code"] == "AccountFrozen"

    assert await ui.goto(f"/dashboard?tenant={tenant}") == 200
    assert await ui.page.locator("[data-metric=open_flags]").inner_text() == "1"
    async with ui.page.expect_navigation():
        await ui.page.get_by_role("link", name="Open anomaly flags").click()
    await ui.settle()
    row = ui.page.locator("#flags tbody tr[data-status=open]")
    assert await row.count() == 1
    cells = [c.strip() for c in await row.locator("td").all_inner_texts()]
    assert cells[1:5] == [customer.external_id, "requests per minute (freeze)", "3", "2"]
    evidence = await row.locator("td").nth(7).text_content() or ""
    assert '"window_seconds": 60' in evidence and '"rule": "requests_per_minute"' in evidence
    user_link = await row.get_by_role("link", name=customer.external_id).get_attribute("href")
    assert user_link == f"/dashboard/users/{customer.external_id}?tenant={tenant}"
    flag_id = await row.get_attribute("data-flag")
    await ui.context.clear_cookies()  # the same browser, another operator

    # An auditor reads the queue, with no resolve form; a resolve it posts is refused.
    await ui.sign_in(auditor)
    assert await ui.goto(f"/dashboard/flags?tenant={tenant}&status=open") == 200
    assert await ui.page.locator("#flags tbody tr[data-status=open]").count() == 1
    assert await ui.write_controls() == 0
    token = await ui.page.locator("input[name=csrf_token]").first.get_attribute("value")
    refused = await ui.page.request.post(
        f"{ui.base_url}/dashboard/flags/{flag_id}/resolve?tenant={tenant}",
        form={"csrf_token": token or "", "action": "unfreeze", "note": "auditor"},
    )
    assert refused.status == 403
    await ui.goto(f"/dashboard/flags?tenant={tenant}&status=open")
    assert await ui.page.locator("#flags tbody tr[data-status=open]").count() == 1
    await ui.context.clear_cookies()

    # A platform admin resolves it with "unfreeze": the user is active again.
    await ui.sign_in(accounts.root)
    await ui.goto(f"/dashboard/flags?tenant={tenant}&status=open")
    form = ui.page.locator(f"#flags tr[data-flag='{flag_id}'] form")
    await form.get_by_label("Resolution").select_option("unfreeze")
    await form.get_by_label("Note").fill("checked with the customer")
    assert await ui.submit(f"#flags tr[data-flag='{flag_id}'] form") == 200
    assert (await ui.page.locator("#flash").inner_text()).startswith("Flag resolved")
    assert await ui.page.locator("#flags tbody tr").first.inner_text() == "No flag matches."
    await ui.goto(f"/dashboard/flags?tenant={tenant}&status=resolved")
    resolved = await ui.page.locator(f"#flags tr[data-flag='{flag_id}']").inner_text()
    assert "unfreeze" in resolved and "checked with the customer" in resolved
    assert await ui.goto(user_link) == 200
    assert await ui.page.locator("[data-metric=status]").inner_text() == "active"
    assert await ui.goto(f"/dashboard?tenant={tenant}") == 200
    assert await ui.page.locator("[data-metric=open_flags]").inner_text() == "0"

    after = await _swap(client_session, customer)
    assert after.status_code == 202, after.text
    await _cancel(client_session, customer, [*jobs, after.json()["job_id"]])
