"""Every SQL statement about admin accounts: who may sign in, with which role."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

ADMIN_COLUMNS = (
    "id, email, role, tenant_id, status, password_hash, created_at, last_login_at, session_epoch"
)


@dataclass(frozen=True)
class AdminRow:
    id: uuid.UUID
    email: str
    role: str
    tenant_id: uuid.UUID | None
    status: str
    password_hash: str
    created_at: datetime
    last_login_at: datetime | None
    session_epoch: int  # in the admin's tokens; raised on disable, which ends them all


async def get_admin(session: AsyncSession, admin_id: uuid.UUID) -> AdminRow | None:
    row = (
        await session.execute(
            text(f"SELECT {ADMIN_COLUMNS} FROM admins WHERE id = :id"), {"id": admin_id}
        )
    ).one_or_none()
    return AdminRow(*row) if row else None


async def get_admin_by_email(session: AsyncSession, email: str) -> AdminRow | None:
    row = (
        await session.execute(
            text(f"SELECT {ADMIN_COLUMNS} FROM admins WHERE lower(email) = lower(:email)"),
            {"email": email},
        )
    ).one_or_none()
    return AdminRow(*row) if row else None


async def any_admin_exists(session: AsyncSession) -> bool:
    return bool((await session.execute(text("SELECT EXISTS (SELECT 1 FROM admins)"))).scalar_one())


async def insert_admin(
    session: AsyncSession,
    *,
    email: str,
    password_hash: str,
    role: str,
    tenant_id: uuid.UUID | None,
) -> AdminRow | None:
    """The new admin, or None when the email is taken (case-insensitively)."""
    row = (
        await session.execute(
            text(
                "INSERT INTO admins (email, password_hash, role, tenant_id) "
                "VALUES (:email, :password_hash, :role, :tenant_id) "
                "ON CONFLICT ((lower(email))) DO NOTHING "
                f"RETURNING {ADMIN_COLUMNS}"
            ),
            {"email": email, "password_hash": password_hash, "role": role, "tenant_id": tenant_id},
        )
    ).one_or_none()
    return AdminRow(*row) if row else None


async def list_admins(session: AsyncSession, tenant_id: uuid.UUID) -> list[AdminRow]:
    rows = await session.execute(
        text(f"SELECT {ADMIN_COLUMNS} FROM admins WHERE tenant_id = :t ORDER BY created_at, id"),
        {"t": tenant_id},
    )
    return [AdminRow(*r) for r in rows]


async def set_admin_status(
    session: AsyncSession, admin_id: uuid.UUID, status: str
) -> AdminRow | None:
    row = (
        await session.execute(
            # Disabling ends every session for good: re-enabled, the admin signs in again.
            text(
                "UPDATE admins SET status = :status, session_epoch = session_epoch + "
                "CASE WHEN CAST(:status AS varchar) = 'active' THEN 0 ELSE 1 END "
                f"WHERE id = :id RETURNING {ADMIN_COLUMNS}"
            ),
            {"id": admin_id, "status": status},
        )
    ).one_or_none()
    return AdminRow(*row) if row else None


async def record_login(
    session: AsyncSession, admin_id: uuid.UUID, new_password_hash: str | None
) -> None:
    await session.execute(
        text(
            "UPDATE admins SET last_login_at = now(), "
            "password_hash = coalesce(:new_hash, password_hash) WHERE id = :id"
        ),
        {"id": admin_id, "new_hash": new_password_hash},
    )
