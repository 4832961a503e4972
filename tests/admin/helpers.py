"""Shared arrangements for the admin, auth and tenancy tests.

Tests isolate themselves by creating their own tenants with random slugs.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from app.core.db import Database
from app.core.errors import install_error_handlers
from app.core.settings import Settings
from app.middleware import RequestContextMiddleware

ROOT_EMAIL = "root@swapmeter.test"  # the bootstrap admin of tests/conftest.py
ROOT_PASSWORD = "root-password-123"
_token_cache: dict[str, str] = {}


def slug() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def login(client: httpx.AsyncClient, email: str, password: str) -> str:
    response = await client.post("/api/v1/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


async def root_headers(client: httpx.AsyncClient) -> dict[str, str]:
    """Authorization for the bootstrap platform admin (signed in once per test run)."""
    if "root" not in _token_cache:
        _token_cache["root"] = await login(client, ROOT_EMAIL, ROOT_PASSWORD)
    return {"Authorization": f"Bearer {_token_cache['root']}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_tenant(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "Tenant " + uuid.uuid4().hex[:6])
    body.setdefault("slug", slug())
    response = await client.post(
        "/api/v1/admin/tenants", json=body, headers=await root_headers(client)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def create_admin(
    client: httpx.AsyncClient, tenant_id: str, role: str = "tenant_admin"
) -> dict[str, str]:
    """A new admin of the tenant; returns its email, password, id and bearer headers."""
    email = f"{role}-{uuid.uuid4().hex[:10]}@example.com"
    password = "correct-horse-battery"
    response = await client.post(
        f"/api/v1/admin/tenants/{tenant_id}/admins",
        json={"email": email, "password": password, "role": role},
        headers=await root_headers(client),
    )
    assert response.status_code == 201, response.text
    token = await login(client, email, password)
    return {"email": email, "password": password, "id": response.json()["id"], "token": token}


async def import_users(
    client: httpx.AsyncClient, tenant_id: str, external_ids: list[str]
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/admin/tenants/{tenant_id}/users/import",
        json={"users": [{"external_id": e} for e in external_ids]},
        headers=await root_headers(client),
    )
    assert response.status_code == 200, response.text
    return response.json()


async def create_api_key(
    client: httpx.AsyncClient, tenant_id: str, external_id: str, **body: Any
) -> dict[str, Any]:
    body.setdefault("name", "test key")
    response = await client.post(
        f"/api/v1/admin/tenants/{tenant_id}/users/{external_id}/api-keys",
        json=body,
        headers=await root_headers(client),
    )
    assert response.status_code == 201, response.text
    return response.json()


# -- direct SQL, for tests that must not depend on the admin API ----------------------------


async def insert_tenant(db: Database) -> uuid.UUID:
    async with db.session() as s:
        return (
            await s.execute(
                text("INSERT INTO tenants (name, slug) VALUES ('SQL tenant', :s) RETURNING id"),
                {"s": slug()},
            )
        ).scalar_one()


async def insert_user(db: Database, tenant_id: uuid.UUID, external_id: str) -> int:
    async with db.session() as s:
        return (
            await s.execute(
                text("INSERT INTO users (tenant_id, external_id) VALUES (:t, :e) RETURNING id"),
                {"t": tenant_id, "e": external_id},
            )
        ).scalar_one()


def mini_app(settings: Settings, db: Database) -> FastAPI:
    """A bare application with the service's middleware and error handlers, for testing
    dependencies and helpers on routes of the test's own."""
    app = FastAPI()
    app.state.settings = settings
    app.state.db = db
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)
    return app


def asgi_client(app: FastAPI, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://swapmeter.test")
