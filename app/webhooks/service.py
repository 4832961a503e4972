"""The tenants' webhook signing secrets: made on first use, rotated by their admins."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.webhooks import repository as repo


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(32)


async def webhook_secret(session: AsyncSession, tenant_id: uuid.UUID) -> Any:
    """The tenant's signing secret, made on first use (also by a delivery)."""
    row = await repo.webhook_secret(session, tenant_id)
    if row is None:
        row = await repo.create_webhook_secret(session, tenant_id, new_webhook_secret())
    return row


async def rotate_webhook_secret(session: AsyncSession, tenant_id: uuid.UUID) -> Any:
    """A new secret, effective for the next delivery (the old one stops verifying)."""
    return await repo.rotate_webhook_secret(session, tenant_id, new_webhook_secret())
