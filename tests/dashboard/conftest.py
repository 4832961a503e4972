"""Browser tests of the dashboard: the real app served by uvicorn on a free port, driven
by Debian's Chromium through Playwright (installed by scripts/test-tools.sh; no browser
is downloaded).

One server and one browser for the whole run; each test gets a fresh browser context
(its own cookies) through ``ui``, whose every visit saves a screenshot under
``.artifacts/screenshots/<test>/`` (git-ignored): the page as tall as it is, up to
``SHOT_MAX_HEIGHT`` pixels (a taller page's top part).

``ui.sign_in(account)`` goes through the sign-in form the first time an account signs in
during the run; later it puts that sign-in's session cookie (its storage state) in the
new context and opens /dashboard, as a returning operator would: the password check
(argon2) and the sign-in form's pages are not repeated in every test. A session that
ended meanwhile (signed out, the admin disabled) is seen on that first page, and the
form is used again. Tests of the sign-in itself use the form directly.

A browser test reads like this::

    async def test_something(ui: Ui, accounts: Accounts) -> None:
        await ui.sign_in(accounts.tenant_admin)
        await ui.goto("/dashboard/users")
        await ui.page.get_by_role("button", name="Freeze").click()
        await ui.settle()          # waits for the page, then takes its screenshot
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from jinja2 import ChoiceLoader, FileSystemLoader
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from admin.dashboard.security import CurrentOperator, WriteOperator, chosen_tenant, require_write
from admin.dashboard.web import PREFIX, page_router, render, templates
from app.core.settings import Settings
from app.main import create_app
from tests.admin.helpers import ROOT_EMAIL, ROOT_PASSWORD, create_admin, create_tenant
from tests.conftest import REPO
from tests.jobs.conftest import free_port

CHROMIUM = Path(os.environ.get("SWAPMETER_CHROMIUM", "/usr/bin/chromium"))
HAVE_CHROMIUM = CHROMIUM.exists()
SCREENSHOTS = REPO / ".artifacts" / "screenshots"
HERE = Path(__file__).resolve().parent
SHOT_MAX_HEIGHT = 3000  # pixels of a page a screenshot keeps (a few screens)

# The cookies of each account's first sign-in in this run, by email (see Ui.sign_in).
_SIGNED_IN: dict[str, list] = {}


# -- an example page, for testing the helpers every page uses -------------------------------

example_router = page_router()


@example_router.get(f"{PREFIX}/example")
async def example_page(request: Request, operator: CurrentOperator) -> Response:
    return render(request, "example.html", tenant_id=chosen_tenant(request, operator))


@example_router.post(f"{PREFIX}/example/write")
async def example_write(request: Request, operator: WriteOperator) -> Response:
    tenant_id = chosen_tenant(request, operator)
    require_write(operator, tenant_id)
    return RedirectResponse(f"{PREFIX}/example?written=1", status_code=303)


# -- the server and the browser -------------------------------------------------------------


@pytest.fixture(scope="session")
def live_server(settings: Settings) -> Iterator[str]:
    """The whole app (with the example page) served on 127.0.0.1 by uvicorn in a thread."""
    application: FastAPI = create_app(settings)
    application.include_router(example_router)
    templates.env.loader = ChoiceLoader(
        [templates.env.loader, FileSystemLoader(HERE / "templates")]  # type: ignore[list-item]
    )
    port = free_port()
    config = uvicorn.Config(
        application, host="127.0.0.1", port=port, log_level="warning", loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="dashboard-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the dashboard's server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.fail(f"{CHROMIUM} is missing: run scripts/test-tools.sh (as root) to install it")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        await launched.close()


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    tenant_id: str | None


@dataclass(frozen=True)
class Accounts:
    root: Account
    tenant_admin: Account
    auditor: Account
    other_tenant_id: str


@pytest.fixture(scope="session")
async def accounts(client_session: httpx.AsyncClient) -> Accounts:
    """The bootstrap platform admin, and a tenant admin and an auditor of one tenant (and
    another tenant, that neither may see)."""
    tenant = await create_tenant(client_session, name="Dashboard tenant")
    other = await create_tenant(client_session, name="Someone else's tenant")
    admin = await create_admin(client_session, tenant["id"], "tenant_admin")
    auditor = await create_admin(client_session, tenant["id"], "auditor")
    return Accounts(
        root=Account(ROOT_EMAIL, ROOT_PASSWORD, None),
        tenant_admin=Account(admin["email"], admin["password"], tenant["id"]),
        auditor=Account(auditor["email"], auditor["password"], tenant["id"]),
        other_tenant_id=other["id"],
    )


@pytest.fixture(scope="session")
async def client_session(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://swapmeter.test") as c:
        yield c


# -- one test's browser tab -----------------------------------------------------------------


class Ui:
    """A browser tab on the live server that screenshots every page it lands on."""

    def __init__(self, context: BrowserContext, page: Page, base_url: str, folder: Path):
        self.context, self.page, self.base_url, self.folder = context, page, base_url, folder
        self.shots = 0
        self.full_page = True  # False: the viewport only (pages dozens of screens tall)
        self.account: Account | None = None  # who signed in last

    async def goto(self, path: str) -> int:
        """Open ``path``; the status of the page finally shown (after redirects)."""
        response = await self.page.goto(self.base_url + path)
        await self.snap()
        assert response is not None
        return response.status

    async def settle(self) -> None:
        """After a click that loads a page: wait for it, then take its screenshot."""
        await self.page.wait_for_load_state("load")
        await self.snap()

    async def submit(self, form_selector: str = "main form") -> int:
        """Submit a form by its submit button, as a user would; the answer's status."""
        async with self.page.expect_navigation() as navigation:
            await self.page.locator(form_selector).locator("[type=submit]").first.click()
        await self.snap()
        response = await navigation.value
        return response.status if response else 0

    async def snap(self) -> None:
        self.shots += 1
        path = self.page.url.removeprefix(self.base_url).split("?")[0] or "/"
        name = re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "root"
        shot = self.folder / f"{self.shots:02d}-{name}.png"
        clip = None
        if self.full_page:
            height = await self.page.evaluate("document.documentElement.scrollHeight")
            if height > SHOT_MAX_HEIGHT:
                width = self.page.viewport_size["width"] if self.page.viewport_size else 1200
                clip = {"x": 0, "y": 0, "width": width, "height": SHOT_MAX_HEIGHT}
        await self.page.screenshot(
            path=shot, full_page=self.full_page, clip=clip, timeout=30_000, animations="disabled"
        )

    async def sign_in(self, account: Account, expect_status: int = 200) -> int:
        """Sign in (the form, or this account's earlier session: see the module's doc);
        the page is then the one sign-in lands on."""
        self.account = account
        cookies = _SIGNED_IN.get(account.email) if expect_status == 200 else None
        if cookies:
            await self.context.add_cookies(cookies)
            status = await self.goto("/dashboard")
            if status == 200 and "/dashboard/login" not in self.page.url:
                return status
            _SIGNED_IN.pop(account.email, None)  # that session ended: the form again
        await self.goto("/dashboard/login")
        await self.page.get_by_label("Email").fill(account.email)
        await self.page.get_by_label("Password").fill(account.password)
        status = await self.submit("form[action='/dashboard/login']")
        assert status == expect_status, await self.page.content()
        if status == 200:
            _SIGNED_IN[account.email] = [
                c for c in await self.context.cookies() if c["name"] == "swapmeter_dashboard"
            ]
        return status

    async def sign_out(self) -> None:
        if self.account is not None:
            _SIGNED_IN.pop(self.account.email, None)  # the server ends that session
        async with self.page.expect_navigation():
            await self.page.get_by_role("button", name="Sign out").click()
        await self.snap()

    async def session_cookie(self) -> dict:
        cookies = await self.context.cookies()
        return next(c for c in cookies if c["name"] == "swapmeter_dashboard")

    async def write_controls(self) -> int:
        """How many buttons or forms that write the page shows (``data-write``)."""
        return await self.page.locator("[data-write]").count()


@pytest.fixture
async def ui(
    browser: Browser, live_server: str, request: pytest.FixtureRequest
) -> AsyncIterator[Ui]:
    folder = SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    yield Ui(context, page, live_server, folder)
    await context.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
