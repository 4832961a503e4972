"""/docs (Swagger UI) and /redoc work offline: every asset comes from this service."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import Route

from tests.dashboard.conftest import Ui


async def test_docs_pages_reference_only_this_service(client: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        html = (await client.get(page)).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", html)
        assert urls, page
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), (page, url)
            assert (await client.get(url)).status_code == 200, url


async def test_swagger_ui_and_redoc_render_with_nothing_from_elsewhere(ui: Ui) -> None:
    # What reaches the network: a request the page's policy blocks never does.
    requested: list[str] = []

    async def record(route: Route) -> None:
        requested.append(route.request.url)
        await route.continue_()

    await ui.context.route("**/*", record)
    ui.full_page = False  # the whole API reference is dozens of screens tall
    await ui.goto("/docs")
    # Both viewers parse a megabyte of script: slow on a busy machine.
    await ui.page.locator(".opblock").first.wait_for(timeout=60_000)
    await ui.snap()
    await ui.goto("/redoc")
    await ui.page.get_by_text("Face-swap API sold on prepaid Tokens.").first.wait_for(
        timeout=60_000
    )
    await ui.snap()
    same_origin = (ui.base_url, "blob:" + ui.base_url)  # ReDoc's search worker
    elsewhere = [url for url in requested if not url.startswith(same_origin)]
    assert not elsewhere
