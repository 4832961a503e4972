"""The optional IP allowlist of the admin and sign-in APIs, and whose X-Forwarded-For counts."""

from __future__ import annotations

from starlette.requests import Request

from app.core.ip_allowlist import client_ip
from app.main import create_app
from tests.admin.helpers import ROOT_EMAIL, asgi_client


def _request(peer: str, forwarded: str | None = None, *more_lines: str) -> Request:
    lines = [forwarded, *more_lines] if forwarded else []
    headers = [(b"x-forwarded-for", line.encode()) for line in lines]
    return Request({"type": "http", "client": (peer, 1234), "headers": headers})


def test_forwarded_for_is_believed_only_from_trusted_proxies(settings) -> None:
    trusting = settings.model_copy(update={"trusted_proxies": "10.0.0.0/8"})
    assert client_ip(_request("10.0.0.2", "198.51.100.1"), trusting) == "198.51.100.1"
    # A client cannot smuggle an address past the proxy: the right-most untrusted hop wins.
    assert client_ip(_request("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.3"), trusting) == (
        "198.51.100.1"
    )
    assert client_ip(_request("203.0.113.9", "198.51.100.1"), trusting) == "203.0.113.9"
    # Nor by sending its own header line ahead of the one the proxy appends.
    assert client_ip(_request("10.0.0.2", "192.0.2.10", "203.0.113.66"), trusting) == (
        "203.0.113.66"
    )
    assert client_ip(_request("10.0.0.2"), trusting) == "10.0.0.2"


async def test_admin_and_sign_in_apis_refuse_addresses_outside_the_allowlist(settings) -> None:
    restricted = settings.model_copy(
        update={"admin_ip_allowlist": "192.0.2.0/24, 2001:db8::/32", "trusted_proxies": ""}
    )
    app = create_app(restricted)
    async with app.router.lifespan_context(app):
        async with asgi_client(app, ip="203.0.113.5") as outsider:
            body = {"email": ROOT_EMAIL, "password": "wrong-password"}
            sign_in = await outsider.post("/api/v1/auth/token", json=body)
            admin = await outsider.get("/api/v1/admin/tenants")
            health = await outsider.get("/healthz")
            # Without trusted proxies, a forged X-Forwarded-For changes nothing.
            forged = await outsider.post(
                "/api/v1/auth/token", json=body, headers={"X-Forwarded-For": "192.0.2.10"}
            )
        async with asgi_client(app, ip="192.0.2.10") as insider:
            allowed = await insider.post("/api/v1/auth/token", json=body)
    assert sign_in.status_code == 403 and sign_in.json()["error"]["code"] == "Forbidden"
    assert admin.status_code in (403, 404)  # 404 until the admin router is mounted
    assert forged.status_code == 403
    assert health.status_code == 200
    assert allowed.status_code == 401  # through the allowlist, then a wrong password
