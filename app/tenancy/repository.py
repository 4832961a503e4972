"""Every SQL statement about tenants, end users and API keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

TENANT_COLUMNS = "id, name, slug, status, approval_threshold, created_at, webhook_url"


@dataclass(frozen=True)
class TenantRow:
    id: uuid.UUID
    name: str
    slug: str
    status: str
    approval_threshold: int | None
    created_at: datetime
    webhook_url: str | None = None


@dataclass(frozen=True)
class UserRow:
    id: int
    tenant_id: uuid.UUID
    external_id: str
    email: str | None
    display_name: str | None
    created_at: datetime
    plan: str | None = None  # the plan's name (migration 0014)


@dataclass(frozen=True)
class ApiKeyRow:
    id: uuid.UUID
    tenant_id: uuid.UUID
    user_id: int
    name: str
    prefix: str
    rate_limit_per_second: int | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class ApiKeyCredentials:
    """What authenticating one request needs, in one round trip."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    user_id: int
    external_id: str
    secret_hash: bytes
    revoked_at: datetime | None
    rate_limit_per_second: int | None
    tenant_status: str
    # The user's plan's rate (null: none, or no plan), read in the same query.
    plan_rate_limit_per_second: int | None = None


# -- tenants -------------------------------------------------------------------------------


async def insert_tenant(session: AsyncSession, *, name: str, slug: str) -> TenantRow | None:
    """The new tenant, or None when the slug is taken."""
    row = (
        await session.execute(
            text(
                f"INSERT INTO tenants (name, slug) VALUES (:name, :slug) "
                f"ON CONFLICT (slug) DO NOTHING RETURNING {TENANT_COLUMNS}"
            ),
            {"name": name, "slug": slug},
        )
    ).one_or_none()
    return TenantRow(*row) if row else None


async def get_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> TenantRow | None:
    row = (
        await session.execute(
            text(f"SELECT {TENANT_COLUMNS} FROM tenants WHERE id = :id"), {"id": tenant_id}
        )
    ).one_or_none()
    return TenantRow(*row) if row else None


async def get_tenant_by_slug(session: AsyncSession, slug: str) -> TenantRow | None:
    row = (
        await session.execute(
            text(f"SELECT {TENANT_COLUMNS} FROM tenants WHERE slug = :slug"), {"slug": slug}
        )
    ).one_or_none()
    return TenantRow(*row) if row else None


async def list_tenants(
    session: AsyncSession, *, only: uuid.UUID | None, after_slug: str | None, limit: int
) -> list[TenantRow]:
    rows = await session.execute(
        text(
            f"SELECT {TENANT_COLUMNS} FROM tenants "
            "WHERE (CAST(:only AS uuid) IS NULL OR id = :only) "
            "AND (CAST(:after AS text) IS NULL OR slug > :after) "
            "ORDER BY slug LIMIT :limit"
        ),
        {"only": only, "after": after_slug, "limit": limit},
    )
    return [TenantRow(*r) for r in rows]


async def update_tenant(
    session: AsyncSession, tenant_id: uuid.UUID, changes: dict[str, Any]
) -> TenantRow | None:
    allowed = {"name", "status", "approval_threshold", "webhook_url"}
    assert set(changes) <= allowed, changes
    if not changes:
        return await get_tenant(session, tenant_id)
    assignments = ", ".join(f"{column} = :{column}" for column in sorted(changes))
    row = (
        await session.execute(
            text(f"UPDATE tenants SET {assignments} WHERE id = :id RETURNING {TENANT_COLUMNS}"),
            {**changes, "id": tenant_id},
        )
    ).one_or_none()
    return TenantRow(*row) if row else None


# -- users ---------------------------------------------------------------------------------

USER_COLUMNS = (
    "id, tenant_id, external_id, email, display_name, created_at, "
    "(SELECT p.name FROM plans p WHERE p.id = users.plan_id) AS plan"
)


async def insert_users(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    external_ids: Sequence[str],
    emails: Sequence[str | None],
    display_names: Sequence[str | None],
) -> list[int]:
    """Ids of the users created; those already there are left untouched. One statement."""
    rows = await session.execute(
        text(
            "INSERT INTO users (tenant_id, external_id, email, display_name) "
            "SELECT :tenant_id, t.external_id, t.email, t.display_name "
            "FROM unnest(CAST(:external_ids AS text[]), CAST(:emails AS text[]), "
            "            CAST(:display_names AS text[])) AS t(external_id, email, display_name) "
            "ORDER BY t.external_id "
            "ON CONFLICT (tenant_id, external_id) DO NOTHING "
            "RETURNING id"
        ),
        {
            "tenant_id": tenant_id,
            "external_ids": list(external_ids),
            "emails": list(emails),
            "display_names": list(display_names),
        },
    )
    return [r[0] for r in rows]


async def get_user(session: AsyncSession, tenant_id: uuid.UUID, external_id: str) -> UserRow | None:
    row = (
        await session.execute(
            text(
                f"SELECT {USER_COLUMNS} FROM users "
                "WHERE tenant_id = :tenant_id AND external_id = :external_id"
            ),
            {"tenant_id": tenant_id, "external_id": external_id},
        )
    ).one_or_none()
    return UserRow(*row) if row else None


async def list_users(
    session: AsyncSession, tenant_id: uuid.UUID, *, after_id: int | None, limit: int
) -> list[UserRow]:
    rows = await session.execute(
        text(
            f"SELECT {USER_COLUMNS} FROM users WHERE tenant_id = :tenant_id "
            "AND id > :after ORDER BY id LIMIT :limit"
        ),
        {"tenant_id": tenant_id, "after": after_id or 0, "limit": limit},
    )
    return [UserRow(*r) for r in rows]


async def update_user(
    session: AsyncSession, user_id: int, changes: dict[str, Any]
) -> UserRow | None:
    """Set ``email`` and ``display_name`` (None clears them); the plan is tenancy.plans'."""
    assert set(changes) <= {"email", "display_name"}, changes
    if changes:
        assignments = ", ".join(f"{column} = :{column}" for column in sorted(changes))
        await session.execute(
            text(f"UPDATE users SET {assignments} WHERE id = :id"), {**changes, "id": user_id}
        )
    row = (
        await session.execute(
            text(f"SELECT {USER_COLUMNS} FROM users WHERE id = :id"), {"id": user_id}
        )
    ).one_or_none()
    return UserRow(*row) if row else None


# -- API keys ------------------------------------------------------------------------------

API_KEY_COLUMNS = (
    "id, tenant_id, user_id, name, prefix, rate_limit_per_second, created_at, revoked_at, "
    "last_used_at"
)


async def insert_api_key(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    user_id: int,
    name: str,
    prefix: str,
    secret_hash: bytes,
    rate_limit_per_second: int | None,
) -> ApiKeyRow | None:
    """The new key row, or None in the (astronomically unlikely) case the prefix is taken."""
    row = (
        await session.execute(
            text(
                "INSERT INTO api_keys (tenant_id, user_id, name, prefix, secret_hash, "
                "rate_limit_per_second) VALUES (:tenant_id, :user_id, :name, :prefix, "
                ":secret_hash, :rate) ON CONFLICT (prefix) DO NOTHING "
                f"RETURNING {API_KEY_COLUMNS}"
            ),
            {
                "tenant_id": tenant_id,
                "user_id": user_id,
                "name": name,
                "prefix": prefix,
                "secret_hash": secret_hash,
                "rate": rate_limit_per_second,
            },
        )
    ).one_or_none()
    return ApiKeyRow(*row) if row else None


async def list_api_keys(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: int
) -> list[ApiKeyRow]:
    rows = await session.execute(
        text(
            f"SELECT {API_KEY_COLUMNS} FROM api_keys "
            "WHERE tenant_id = :tenant_id AND user_id = :user_id ORDER BY created_at, id"
        ),
        {"tenant_id": tenant_id, "user_id": user_id},
    )
    return [ApiKeyRow(*r) for r in rows]


async def count_live_api_keys(session: AsyncSession, user_id: int) -> int:
    return int(
        (
            await session.execute(
                text(
                    "SELECT count(*) FROM api_keys WHERE user_id = :user_id AND revoked_at IS NULL"
                ),
                {"user_id": user_id},
            )
        ).scalar_one()
    )


async def revoke_api_key(
    session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID
) -> ApiKeyRow | None:
    """Marks the key revoked (keeping the first revocation time); None when not this tenant's."""
    row = (
        await session.execute(
            text(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
                f"WHERE id = :id AND tenant_id = :tenant_id RETURNING {API_KEY_COLUMNS}"
            ),
            {"id": key_id, "tenant_id": tenant_id},
        )
    ).one_or_none()
    return ApiKeyRow(*row) if row else None


async def find_api_key_credentials(
    session: AsyncSession | AsyncConnection, prefix: str
) -> ApiKeyCredentials | None:
    row = (
        await session.execute(
            text(
                "SELECT k.id, k.tenant_id, k.user_id, u.external_id, k.secret_hash, k.revoked_at, "
                "k.rate_limit_per_second, t.status, p.rate_limit_per_second "
                "FROM api_keys k JOIN users u ON u.id = k.user_id "
                "JOIN tenants t ON t.id = k.tenant_id "
                "LEFT JOIN plans p ON p.id = u.plan_id WHERE k.prefix = :prefix"
            ),
            {"prefix": prefix},
        )
    ).one_or_none()
    return ApiKeyCredentials(*row) if row else None


async def touch_api_key_last_used(conn: AsyncConnection, key_id: uuid.UUID) -> None:
    """Writes only when the stored time is more than a minute old."""
    await conn.execute(
        text(
            "UPDATE api_keys SET last_used_at = now() WHERE id = :id "
            "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"
        ),
        {"id": key_id},
    )
