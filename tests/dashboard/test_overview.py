"""The overview page: a tenant's Tokens, users, jobs and queue, from real swaps."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.admin.helpers import ROOT_EMAIL, ROOT_PASSWORD, asgi_client, create_admin
from tests.dashboard.conftest import Account, Ui
from tests.dashboard.test_sessions import sign_in
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

SMALL = base64.b64encode(face("obama_small.jpg")).decode()
SWAP = {"source": SMALL, "target": SMALL, "response": "url"}


@dataclass(frozen=True)
class Busy:
    """A tenant with 100 Tokens recharged, three swaps done and one canceled."""

    customer: Customer
    consumed: int
    admin: Account


@pytest.fixture(scope="module")
async def busy(settings, db, tmp_path_factory) -> AsyncIterator[Busy]:
    configured = job_settings(settings, tmp_path_factory.mktemp("overview"), jobs_swapper="noop")
    async with running_app(configured) as application, client_for(application) as api:
        customer = await make_customer(api, db, tokens=100)
        for _ in range(3):
            done = await api.post("/api/v1/swap-face", json=SWAP, headers=customer.headers)
            assert done.status_code == 200, done.text
            await wait_for_job(api, customer, done.json()["job_id"])
        left = (await balance(api, customer))["balance"]
        admin = await create_admin(api, customer.tenant_id, "tenant_admin")
    yield Busy(customer, 100 - left, Account(admin["email"], admin["password"], None))


def _metrics(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-metric="([a-z_]+)">([^<]*)<', html))


async def test_the_overview_adds_up_what_the_tenant_did(app: FastAPI, busy: Busy) -> None:
    async with asgi_client(app) as browser:
        await sign_in(browser, ROOT_EMAIL, ROOT_PASSWORD)
        page = await browser.get(
            "/dashboard", params={"tenant": busy.customer.tenant_id, "period": "today"}
        )
        week = await browser.get("/dashboard", params={"tenant": busy.customer.tenant_id})
        bad_period = await browser.get("/dashboard", params={"period": "forever"})
    assert page.status_code == 200, page.text
    figures = _metrics(page.text)
    assert figures["recharged"] == "100" and figures["consumed"] == f"{busy.consumed:,}"
    assert figures["held_now"] == "0" and figures["active_users"] == "1"
    assert figures["success_rate"] == "100.0 %" and figures["queue_depth"] == "0"
    assert _metrics(week.text)["recharged"] == "100"
    image_row = re.search(r'<th scope="row">image</th>\s*<td class="num">(\d+)</td>', page.text)
    assert image_row and image_row.group(1) == "3"
    hours = re.findall(r"<td>\d{4}-\d\d-\d\d \d\d:00</td><td class=\"num\">(\d+)</td>", page.text)
    assert len(hours) == 24 and sum(map(int, hours)) == 3  # succeeded, by hour
    assert page.text.count("<svg") == 2 and "<script" not in page.text.split("</head>")[1]
    assert bad_period.status_code == 404


async def test_queued_jobs_show_as_queue_depth(client: httpx.AsyncClient, app, db) -> None:
    """The session's app runs no worker: a swap stays queued, and the overview says so."""
    customer = await make_customer(client, db, tokens=10)
    accepted = await client.post(
        "/api/v1/swap-face", json=SWAP, headers={**customer.headers, "Prefer": "wait=0"}
    )
    assert accepted.status_code == 202, accepted.text
    async with db.session() as s:  # queued a minute ago, rather than waiting for it
        await s.execute(
            text("UPDATE jobs SET created_at = created_at - interval '60 seconds' WHERE id = :j"),
            {"j": accepted.json()["job_id"]},
        )
        await s.commit()
    async with asgi_client(app) as browser:
        await sign_in(browser, ROOT_EMAIL, ROOT_PASSWORD)
        page = await browser.get("/dashboard", params={"tenant": customer.tenant_id})
    figures = _metrics(page.text)
    assert figures["queue_depth"] == "1" and int(figures["oldest_queued"].split()[0]) >= 60
    assert int(figures["held_now"]) > 0


async def test_an_operator_reads_the_overview_on_a_laptop_and_a_phone(ui: Ui, busy: Busy) -> None:
    await ui.sign_in(busy.admin)
    assert await ui.page.get_by_role("heading", name=re.compile("^Overview: ")).is_visible()
    await ui.page.get_by_role("link", name="30 days").click()
    await ui.settle()
    assert "period=30d" in ui.page.url
    assert await ui.page.locator("#tokens-chart svg").is_visible()
    assert await ui.page.locator("#jobs-chart svg").is_visible()
    await ui.page.set_viewport_size({"width": 390, "height": 844})
    await ui.goto("/dashboard?period=today")
    overflow = await ui.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    # Keyboard: the skip link comes first, then the navigation.
    await ui.page.keyboard.press("Tab")
    assert await ui.page.evaluate("document.activeElement.textContent") == "Skip to content"
