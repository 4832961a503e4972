"""Every SQL statement about stored Idempotency-Key responses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


@dataclass(frozen=True)
class StoredKey:
    method_path: str
    request_hash: str | None  # None: stored without one (see service.Fingerprint.matches)
    response_status: int | None
    response_body: Any
    created_at: datetime
    answered_at: datetime | None = None


async def claim(
    session: AsyncSession,
    *,
    scope: str,
    key: str,
    method_path: str,
    request_hash: str,
    permanent: bool = False,
) -> bool:
    """True when this transaction now owns the key.

    A concurrent transaction that inserted the same key first makes this statement wait
    until it commits (then: False) or rolls back (then: True).
    """
    row = (
        await session.execute(
            text(
                "INSERT INTO idempotency_keys (scope, key, method_path, request_hash, permanent) "
                "VALUES (:scope, :key, :method_path, :request_hash, :permanent) "
                "ON CONFLICT (scope, key) DO NOTHING RETURNING 1"
            ),
            {
                "scope": scope,
                "key": key,
                "method_path": method_path,
                "request_hash": request_hash,
                "permanent": permanent,
            },
        )
    ).one_or_none()
    return row is not None


async def get(session: AsyncSession, *, scope: str, key: str) -> StoredKey | None:
    row = (
        await session.execute(
            text(
                "SELECT method_path, request_hash, response_status, response_body, created_at, "
                "answered_at FROM idempotency_keys WHERE scope = :scope AND key = :key"
            ),
            {"scope": scope, "key": key},
        )
    ).one_or_none()
    return StoredKey(*row) if row else None


async def store_response(
    session: AsyncSession, *, scope: str, key: str, status: int, body_json: str
) -> None:
    await session.execute(
        text(
            "UPDATE idempotency_keys SET response_status = :status, "
            "response_body = CAST(:body AS jsonb) WHERE scope = :scope AND key = :key"
        ),
        {"scope": scope, "key": key, "status": status, "body": body_json},
    )


async def mark_answered(
    session: AsyncSession | AsyncConnection, *, scope: str, key: str, status: int
) -> None:
    """The first request of a key stored before it answered has now answered ``status``."""
    await session.execute(
        text(
            "UPDATE idempotency_keys SET response_status = :status, answered_at = now() "
            "WHERE scope = :scope AND key = :key AND answered_at IS NULL"
        ),
        {"scope": scope, "key": key, "status": status},
    )


async def delete_older_than(session: AsyncSession, *, hours: int, batch: int) -> int:
    """Deletes up to ``batch`` expired keys (never a permanent one); returns how many went."""
    deleted = await session.execute(
        text(
            "WITH gone AS (DELETE FROM idempotency_keys WHERE (scope, key) IN ("
            "SELECT scope, key FROM idempotency_keys "
            "WHERE created_at < now() - make_interval(hours => :hours) AND NOT permanent "
            "LIMIT :batch) "
            "RETURNING 1) SELECT count(*) FROM gone"
        ),
        {"hours": hours, "batch": batch},
    )
    return int(deleted.scalar_one())
