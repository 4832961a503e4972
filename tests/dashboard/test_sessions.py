"""Dashboard sessions without a browser: cookies, expiry, disabled admins, the allowlist."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI
from starlette.requests import Request

from admin.dashboard import sessions
from app.core.settings import Settings
from app.main import create_app
from tests.admin.helpers import (
    ROOT_EMAIL,
    ROOT_PASSWORD,
    asgi_client,
    create_admin,
    create_tenant,
    root_headers,
)

_TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    form_page = await client.get("/dashboard/login")
    token = _TOKEN.search(form_page.text).group(1)  # type: ignore[union-attr]
    return await client.post(
        "/dashboard/login", data={"email": email, "password": password, "csrf_token": token}
    )


async def test_cookies_are_secure_over_https_and_in_production(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://swapmeter.test") as c:
        signed_in = await sign_in(c, ROOT_EMAIL, ROOT_PASSWORD)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/dashboard"
    cookie = signed_in.headers["set-cookie"].lower()
    assert "swapmeter_dashboard=" in cookie and "secure" in cookie and "httponly" in cookie
    assert "samesite=strict" in cookie and "max-age=28800" in cookie
    production = Settings(
        environment="production", jwt_secret="x" * 40, audit_key="y" * 40, database_url="x"
    )
    scope = {"type": "http", "scheme": "http", "path": "/", "headers": [], "query_string": b""}
    assert sessions.cookie_is_secure(Request(scope), production)  # behind a TLS proxy
    assert not sessions.cookie_is_secure(Request(scope), Settings(environment="development"))


async def test_a_session_ends_when_its_admin_is_disabled_or_it_expires(
    app: FastAPI, client: httpx.AsyncClient, redis
) -> None:
    tenant = await create_tenant(client)
    admin = await create_admin(client, tenant["id"], "tenant_admin")
    async with asgi_client(app) as browser:
        assert (await sign_in(browser, admin["email"], admin["password"])).status_code == 303
        assert (await browser.get("/dashboard")).status_code == 200
        disabled = await client.patch(
            f"/api/v1/admin/admins/{admin['id']}",
            json={"status": "disabled"},
            headers=await root_headers(client),
        )
        assert disabled.status_code == 200
        gone = await browser.get("/dashboard")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/dashboard/login")
    async with asgi_client(app) as browser:
        assert (await sign_in(browser, ROOT_EMAIL, ROOT_PASSWORD)).status_code == 303
        session_id = browser.cookies["swapmeter_dashboard"]
        assert await redis.ttl(sessions._key(session_id)) > 28000  # the server forgets it
        await redis.delete(sessions._key(session_id))  # as Redis does when its TTL is up
        assert (await browser.get("/dashboard")).status_code == 303


async def test_the_admin_allowlist_applies_to_the_dashboard(settings: Settings) -> None:
    restricted = settings.model_copy(
        update={"admin_ip_allowlist": "192.0.2.0/24", "trusted_proxies": ""}
    )
    app = create_app(restricted)
    async with app.router.lifespan_context(app):
        async with asgi_client(app, ip="203.0.113.5") as outsider:
            login = await outsider.get("/dashboard/login")
            page = await outsider.get("/dashboard")
        async with asgi_client(app, ip="192.0.2.10") as insider:
            allowed = await insider.get("/dashboard/login")
    assert login.status_code == 403 and "text/html" in login.headers["content-type"]
    assert page.status_code == 403
    assert allowed.status_code == 200


async def test_pages_are_html_with_strict_headers_and_not_in_the_openapi(
    client: httpx.AsyncClient,
) -> None:
    login = await client.get("/dashboard/login")
    assert login.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in login.headers["content-security-policy"]
    assert login.headers["cache-control"] == "no-store"
    missing = await client.get("/dashboard/no-such-page")
    assert missing.status_code == 404 and "There is no such page." in missing.text
    assert (await client.get("/api/v1/no-such-route")).json()["error"]["code"] == "NotFound"
    css = await client.get(re.search(r'href="(/dashboard/static/[^"]+)"', login.text).group(1))
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    spec = (await client.get("/openapi.json")).json()
    assert not [path for path in spec["paths"] if path.startswith(("/dashboard", "/docs"))]


async def test_sign_in_goes_back_only_to_dashboard_pages(app: FastAPI) -> None:
    async with asgi_client(app) as browser:
        form_page = await browser.get("/dashboard/login")
        token = _TOKEN.search(form_page.text).group(1)  # type: ignore[union-attr]
        answer = await browser.post(
            "/dashboard/login",
            data={
                "email": ROOT_EMAIL,
                "password": ROOT_PASSWORD,
                "csrf_token": token,
                "next": "//evil.example/dashboard",
            },
        )
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
