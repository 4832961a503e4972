"""The append-only, hash-chained audit log of admin actions.

Each row's ``hash = sha256(prev_hash || canonical record)``, where the canonical record is
the JSON (sorted keys, no spaces) of its id, time, actor, address, request id, action,
tenant, target and details; the first row's ``prev_hash`` is 64 zeros. Appends take a
transaction-scoped advisory lock, so the chain stays a single line however many processes
write; the database itself refuses UPDATE, DELETE and TRUNCATE (migration 0001).

Callers append *last* in their transaction: the lock is held until commit.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import Request
from sqlalchemy import BigInteger, DateTime, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.ip_allowlist import client_ip


class Actor(Protocol):
    """Who acted: an admin principal (``app.auth``), named by its id and email."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def email(self) -> str: ...


class AuditRecord(Base):
    """One admin action. The database refuses UPDATE and DELETE on these rows."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    actor: Mapped[str] = mapped_column(String(320))
    actor_ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    target: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


GENESIS_HASH = "0" * 64
# pg_advisory_xact_lock key serialising appends ("audit" in ASCII).
AUDIT_APPEND_LOCK = 0x6175646974
VERIFY_BATCH = 5000


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def chain_hash(prev_hash: str, record: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical(record)).encode()).hexdigest()


def _canonical_fields(
    *,
    id: int,
    at: datetime,
    actor_id: uuid.UUID | None,
    actor: str,
    actor_ip: str | None,
    request_id: str | None,
    action: str,
    tenant_id: uuid.UUID | None,
    target: str | None,
    details: Any,
) -> dict[str, Any]:
    return {
        "id": id,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor_id": str(actor_id) if actor_id else None,
        "actor": actor,
        "actor_ip": actor_ip,
        "request_id": request_id,
        "action": action,
        "tenant_id": str(tenant_id) if tenant_id else None,
        "target": target,
        "details": details,
    }


async def record(
    session: AsyncSession,
    *,
    request: Request | None,
    actor: Actor | None,
    action: str,
    tenant_id: uuid.UUID | None,
    target: str | None,
    details: dict[str, Any],
    actor_label: str | None = None,
) -> AuditRecord:
    """Appends one row to the chain, in the caller's transaction (flushed, not committed)."""
    actor_ip: str | None = None
    request_id: str | None = None
    if request is not None:
        actor_ip = client_ip(request, request.app.state.settings)[:64] or None
        request_id = getattr(request.state, "request_id", None) or None
    actor_name = actor_label or (actor.email if actor else "system")
    actor_id = actor.id if actor else None

    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_APPEND_LOCK})
    # One round trip: the id (taken under the lock, so ids follow chain order), the time,
    # the previous hash, and the details as JSONB will return them, so that hashing now and
    # re-hashing later in verify_chain see the very same values.
    row = (
        await session.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence('audit_log', 'id')), clock_timestamp(), "
                "(SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1), CAST(:details AS jsonb)"
            ),
            {"details": json.dumps(details, default=str)},
        )
    ).one()
    new_id, at, last_hash, stored_details = row
    prev_hash = last_hash or GENESIS_HASH
    fields = _canonical_fields(
        id=new_id,
        at=at,
        actor_id=actor_id,
        actor=actor_name,
        actor_ip=actor_ip,
        request_id=request_id,
        action=action,
        tenant_id=tenant_id,
        target=target,
        details=stored_details,
    )
    digest = chain_hash(prev_hash, fields)
    entry = AuditRecord(
        id=new_id,
        at=at,
        actor_id=actor_id,
        actor=actor_name,
        actor_ip=actor_ip,
        request_id=request_id,
        action=action,
        tenant_id=tenant_id,
        target=target,
        details=stored_details,
        prev_hash=prev_hash,
        hash=digest,
    )
    await session.execute(
        text(
            "INSERT INTO audit_log (id, at, actor_id, actor, actor_ip, request_id, action, "
            "tenant_id, target, details, prev_hash, hash) OVERRIDING SYSTEM VALUE VALUES "
            "(:id, :at, :actor_id, :actor, :actor_ip, :request_id, :action, :tenant_id, "
            ":target, CAST(:details AS jsonb), :prev_hash, :hash)"
        ),
        {
            "id": new_id,
            "at": at,
            "actor_id": actor_id,
            "actor": actor_name,
            "actor_ip": actor_ip,
            "request_id": request_id,
            "action": action,
            "tenant_id": tenant_id,
            "target": target,
            "details": json.dumps(stored_details),
            "prev_hash": prev_hash,
            "hash": digest,
        },
    )
    return entry


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records_checked: int
    first_bad_id: int | None = None
    problem: str | None = None


async def check_chain(session: AsyncSession) -> ChainReport:
    """Recomputes every hash in id order, in batches (constant memory)."""
    prev_hash = GENESIS_HASH
    after_id = 0
    checked = 0
    while True:
        rows = (
            await session.execute(
                text(
                    "SELECT id, at, actor_id, actor, actor_ip, request_id, action, tenant_id, "
                    "target, details, prev_hash, hash FROM audit_log WHERE id > :after "
                    "ORDER BY id LIMIT :n"
                ),
                {"after": after_id, "n": VERIFY_BATCH},
            )
        ).all()
        if not rows:
            return ChainReport(ok=True, records_checked=checked)
        for r in rows:
            if r.prev_hash != prev_hash:
                return ChainReport(
                    False, checked, r.id, "prev_hash does not link to the row before"
                )
            fields = _canonical_fields(
                id=r.id,
                at=r.at,
                actor_id=r.actor_id,
                actor=r.actor,
                actor_ip=r.actor_ip,
                request_id=r.request_id,
                action=r.action,
                tenant_id=r.tenant_id,
                target=r.target,
                details=r.details,
            )
            if chain_hash(prev_hash, fields) != r.hash:
                return ChainReport(False, checked, r.id, "row content does not match its hash")
            prev_hash = r.hash
            checked += 1
        after_id = rows[-1].id


async def verify_chain(session: AsyncSession) -> bool:
    """True when no audit row was edited, inserted out of chain or removed mid-chain."""
    return (await check_chain(session)).ok
