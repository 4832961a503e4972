"""Jobs in a real browser: a real swap, run by a real worker, on its job page; its refund
applies once however often the form is sent; other tenants' operators get 404, auditors
see no write button."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import text

from app.core.db import Database
from app.core.settings import Settings
from tests.admin.helpers import create_admin
from tests.dashboard.conftest import Account, Accounts, Ui
from tests.jobs.conftest import (
    Customer,
    balance,
    client_for,
    face,
    job_settings,
    make_customer,
    running_app,
    wait_for_job,
)


@dataclass(frozen=True)
class FinishedJob:
    customer: Customer
    job: dict
    auditor: Account


@pytest.fixture(scope="module")
async def finished(
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    db: Database,
    client_session: httpx.AsyncClient,
) -> AsyncIterator[FinishedJob]:
    """A swap that succeeded on a worker (an app with an in-process worker, on the test
    database), its customer with 10 Tokens, and an auditor of its tenant."""
    # Its results where the dashboard's server keeps them, so the result link works there.
    configured = job_settings(
        settings, tmp_path_factory.mktemp("dashboard-jobs"), results_dir=settings.results_path
    )
    async with running_app(configured) as application, client_for(application) as api:
        customer = await make_customer(api, db, tokens=10)
        encode = lambda data: base64.b64encode(data).decode()  # noqa: E731
        body = {"source": encode(face("obama.jpg")), "target": encode(face("biden.jpg"))}
        posted = await api.post("/api/v1/swap-face", json=body, headers=customer.headers)
        assert posted.status_code in (200, 202), posted.text
        job = await wait_for_job(api, customer, posted.json()["job_id"])
        assert (job["status"], job["tokens_charged"]) == ("succeeded", 1), job
    auditor = await create_admin(client_session, customer.tenant_id, "auditor")
    yield FinishedJob(
        customer, job, Account(auditor["email"], auditor["password"], customer.tenant_id)
    )


async def test_the_job_page_shows_a_finished_job_and_refunds_it_once(
    ui: Ui, accounts: Accounts, finished: FinishedJob, db: Database, client_session
) -> None:
    tenant, job_id = finished.customer.tenant_id, finished.job["id"]
    await ui.sign_in(accounts.root)
    assert await ui.goto(f"/dashboard/jobs?tenant={tenant}&status=succeeded") == 200
    row = ui.page.locator(f"tr[data-job='{job_id}']")
    assert finished.customer.external_id in await row.inner_text()
    async with ui.page.expect_navigation():
        await row.get_by_role("link").first.click()
    await ui.settle()
    assert await ui.page.locator("#job-status").inner_text() == "succeeded"
    assert await ui.page.locator("[data-metric=charged]").inner_text() == "1"
    assert await ui.page.locator("[data-metric=held]").inner_text() == "1"
    timeline = await ui.page.locator("#timeline").inner_text()
    assert "Started:" in timeline and "Ended (succeeded):" in timeline and "Attempts: 1" in timeline
    link = await ui.page.get_by_role("link", name="Download the result").get_attribute("href")
    result = await ui.context.request.get(ui.base_url + (link or ""))
    assert result.status == 200 and result.headers["content-type"].startswith("image/")

    # Refund: the form sent twice at once (a double click with no script), then again.
    form = ui.page.locator("#refund")
    await form.get_by_label("Reason").fill("blurry result")
    fields = {
        name: await form.locator(f"input[name={name}]").input_value()
        for name in ("csrf_token", "idempotency_key", "reason", "amount")
    }
    action = ui.base_url + (await form.get_attribute("action") or "")
    sent = await asyncio.gather(
        *(ui.context.request.post(action, form=fields, max_redirects=0) for _ in range(2))
    )
    assert [answer.status for answer in sent] == [303, 303]
    assert await ui.submit("#refund") == 200  # the same form, a third time
    assert "applied once, not again" in await ui.page.locator("#flash").inner_text()
    assert await ui.page.locator("[data-metric=refunded]").inner_text() == "1"
    assert await ui.page.locator("#refund-done").is_visible()
    assert (await balance(client_session, finished.customer))["balance"] == 10
    async with db.session() as s:
        refunds = (
            await s.execute(
                text(
                    "SELECT count(*) FROM ledger_entries WHERE tenant_id = :t AND kind = 'refund'"
                ),
                {"t": tenant},
            )
        ).scalar_one()
    assert refunds == 1


async def test_another_tenants_admin_gets_404_for_the_job(
    ui: Ui, accounts: Accounts, finished: FinishedJob
) -> None:
    await ui.sign_in(accounts.tenant_admin)
    job_id, tenant = finished.job["id"], finished.customer.tenant_id
    assert await ui.goto(f"/dashboard/jobs/{job_id}?tenant={tenant}") == 404
    assert await ui.page.get_by_role("heading", name="Not found").is_visible()
    assert await ui.goto(f"/dashboard/jobs/{job_id}") == 404  # not in its own tenant either
    assert await ui.goto(f"/dashboard/jobs?tenant={tenant}") == 404


async def test_an_auditor_reads_the_job_and_cannot_refund_it(ui: Ui, finished: FinishedJob) -> None:
    await ui.sign_in(finished.auditor)
    job_id = finished.job["id"]
    assert await ui.goto("/dashboard/jobs") == 200
    assert await ui.page.locator(f"tr[data-job='{job_id}']").count() == 1
    assert await ui.write_controls() == 0
    assert await ui.goto(f"/dashboard/jobs/{job_id}") == 200
    assert await ui.page.locator("#job-status").inner_text() == "succeeded"
    assert await ui.write_controls() == 0
    token = await ui.page.locator("input[name=csrf_token]").first.input_value()
    for path, form in (
        (f"/dashboard/jobs/{job_id}/refund", {"reason": "r", "idempotency_key": "k"}),
        (f"/dashboard/jobs/{job_id}/cancel", {}),
    ):
        answer = await ui.context.request.post(
            ui.base_url + path, form={**form, "csrf_token": token}
        )
        assert answer.status == 403, path
