"""The append-only, hash-chained audit log of admin actions.

Each row's ``hash`` chains it to the row before: ``HMAC-SHA256(key, prev_hash || canonical
record)``, where the canonical record is the JSON (sorted keys, no spaces) of its id, time,
actor, address, request id, action, tenant, target, details and ``key_id``, the id of the
key (``SWAPMETER_AUDIT_KEY``, a secret outside the database) that signed it. Rows written
before keys existed (``key_id`` NULL, migration 0010) keep ``sha256(prev_hash || canonical
record without key_id)``; the first keyed row chains on from them, and no unkeyed row may
follow a keyed one. The first row's ``prev_hash`` is 64 zeros.

Appends take a transaction-scoped advisory lock, so the chain stays a single line however
many processes write; the database itself refuses UPDATE, DELETE and TRUNCATE (migration
0001). Its owner can still switch that off, but cannot recompute keyed hashes without the
key, nor remove the newest rows unnoticed once they are anchored (``app.core.audit_anchor``:
``check_chain`` compares the chain with that anchor).

Callers append *last* in their transaction: the lock is held until commit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import Request
from sqlalchemy import BigInteger, DateTime, Index, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.ip_allowlist import client_ip
from app.core.settings import Settings, get_settings


class Actor(Protocol):
    """Who acted: an admin principal (``app.auth``), named by its id and email."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def email(self) -> str: ...


class AuditRecord(Base):
    """One admin action. The database refuses UPDATE and DELETE on these rows."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant_id_id", "tenant_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    actor: Mapped[str] = mapped_column(String(320))
    actor_ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    # Indexed with id (migration 0018): a tenant's records newest first.
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    target: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    # The id of the key that signed this row's hash; NULL: a plain sha256 (before 0010).
    key_id: Mapped[str | None] = mapped_column(String(32))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


GENESIS_HASH = "0" * 64
# pg_advisory_xact_lock key serialising appends ("audit" in ASCII).
AUDIT_APPEND_LOCK = 0x6175646974
VERIFY_BATCH = 5000
_CANONICAL = (
    "id",
    "at",
    "actor_id",
    "actor",
    "actor_ip",
    "request_id",
    "action",
    "tenant_id",
    "target",
    "details",
)


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def chain_hash(prev_hash: str, record: dict[str, Any]) -> str:
    """The unkeyed hash of the rows written before audit keys existed."""
    return hashlib.sha256((prev_hash + canonical(record)).encode()).hexdigest()


class Keyring:
    """The audit keys by id; the first one signs new rows, every one verifies its rows."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise ValueError("an audit keyring needs at least one key")
        self._keys = dict(keys)
        self.signing_id = next(iter(self._keys))

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        return cls(settings.audit_keys())

    def knows(self, key_id: str) -> bool:
        return key_id in self._keys

    def row_hash(self, prev_hash: str, key_id: str | None, record: dict[str, Any]) -> str:
        """The hash of one row: keyed by ``key_id``'s secret, or plain when it is None."""
        if key_id is None:
            return chain_hash(prev_hash, record)
        message = (prev_hash + canonical({**record, "key_id": key_id})).encode()
        return hmac.new(self._keys[key_id], message, hashlib.sha256).hexdigest()


def default_keyring() -> Keyring:
    """The keys of the process's settings (``SWAPMETER_AUDIT_*``; parsing them takes
    microseconds, so nothing is cached)."""
    return Keyring.from_settings(get_settings())


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


def canonical_record(row: Any) -> dict[str, Any]:
    """The hashed fields of a row (a mapping, or a result row with those attributes)."""
    if isinstance(row, Mapping):
        return _canonical_fields(**{name: row[name] for name in _CANONICAL})
    return _canonical_fields(**{name: getattr(row, name) for name in _CANONICAL})


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
    keys: Keyring | None = None,
) -> AuditRecord:
    """Appends one row to the chain, in the caller's transaction (flushed, not committed),
    signed with the first key of ``keys`` (default: the settings')."""
    keys = keys or default_keyring()
    values: dict[str, Any] = {
        "actor_id": actor.id if actor else None,
        "actor": actor_label or (actor.email if actor else "system"),
        "actor_ip": None,
        "request_id": None,
        "action": action,
        "tenant_id": tenant_id,
        "target": target,
    }
    if request is not None:
        values["actor_ip"] = client_ip(request, request.app.state.settings)[:64] or None
        values["request_id"] = getattr(request.state, "request_id", None) or None

    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_APPEND_LOCK})
    # One round trip: the id (taken under the lock, so ids follow chain order), the time,
    # the previous hash, and the details as JSONB will return them, so that hashing now and
    # re-hashing later in check_chain see the very same values.
    row = (
        await session.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence('audit_log', 'id')), clock_timestamp(), "
                "(SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1), CAST(:details AS jsonb)"
            ),
            {"details": json.dumps(details, default=str)},
        )
    ).one()
    values["id"], values["at"], last_hash, values["details"] = row
    values["prev_hash"] = last_hash or GENESIS_HASH
    values["key_id"] = keys.signing_id
    values["hash"] = keys.row_hash(values["prev_hash"], keys.signing_id, canonical_record(values))
    await session.execute(
        text(
            "INSERT INTO audit_log (id, at, actor_id, actor, actor_ip, request_id, action, "
            "tenant_id, target, details, prev_hash, key_id, hash) OVERRIDING SYSTEM VALUE "
            "VALUES (:id, :at, :actor_id, :actor, :actor_ip, :request_id, :action, "
            ":tenant_id, :target, CAST(:details AS jsonb), :prev_hash, :key_id, :hash)"
        ),
        {**values, "details": json.dumps(values["details"])},
    )
    return AuditRecord(**values)


@dataclass(frozen=True)
class Anchor:
    """The chain's head as seen at ``at`` (Unix time), kept outside the audit table."""

    id: int
    hash: str
    key_id: str | None
    at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Anchor:
        data = json.loads(raw)
        anchor = cls(int(data["id"]), str(data["hash"]), data.get("key_id"), float(data["at"]))
        if len(anchor.hash) != 64 or not set(anchor.hash) <= set("0123456789abcdef"):
            raise ValueError(f"an audit anchor with a malformed hash: {anchor.hash!r}")
        return anchor

    def when(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records_checked: int
    first_bad_id: int | None = None
    problem: str | None = None


def _row_problem(r: Any, prev_hash: str, keyed_before: bool, keys: Keyring) -> str | None:
    if r.prev_hash != prev_hash:
        return "prev_hash does not link to the row before"
    if r.key_id is None and keyed_before:
        return "an unkeyed row follows keyed ones"
    if r.key_id is not None and not keys.knows(r.key_id):
        return f"signed with key id {r.key_id!r}, which is not configured"
    if keys.row_hash(prev_hash, r.key_id, canonical_record(r)) != r.hash:
        return "row content does not match its hash"
    return None


def _anchor_problem(r: Any, anchor: Anchor) -> str | None:
    if r.id == anchor.id and r.hash == anchor.hash:
        return None
    state = "missing" if r.id != anchor.id else "not the row anchored"
    return (
        f"row {anchor.id}, anchored as the head at {anchor.when()}, is {state}: "
        "the chain was rewritten"
    )


async def check_chain(
    session: AsyncSession, *, keys: Keyring | None = None, anchor: Anchor | None = None
) -> ChainReport:
    """Recomputes every hash in id order, in batches (constant memory), and checks that
    the chain still holds ``anchor`` (the newest head kept outside the table), if given."""
    keys = keys or default_keyring()
    prev_hash, keyed, after_id, checked = GENESIS_HASH, False, 0, 0
    while True:
        rows = (
            await session.execute(
                text(
                    "SELECT id, at, actor_id, actor, actor_ip, request_id, action, tenant_id, "
                    "target, details, prev_hash, key_id, hash FROM audit_log WHERE id > :after "
                    "ORDER BY id LIMIT :n"
                ),
                {"after": after_id, "n": VERIFY_BATCH},
            )
        ).all()
        for r in rows:
            problem = _row_problem(r, prev_hash, keyed, keys)
            if problem is None and anchor is not None and after_id < anchor.id <= r.id:
                problem = _anchor_problem(r, anchor)
            if problem is not None:
                return ChainReport(False, checked, r.id, problem)
            prev_hash, keyed, after_id = r.hash, keyed or r.key_id is not None, r.id
            checked += 1
        if not rows:
            break
    if anchor is not None and after_id < anchor.id:
        return ChainReport(
            False,
            checked,
            anchor.id,
            f"the chain ends at row {after_id}, but row {anchor.id} was anchored as the head "
            f"at {anchor.when()}: rows were removed",
        )
    return ChainReport(ok=True, records_checked=checked)


async def head(session: AsyncSession) -> Anchor | None:
    """The newest row's id and hash, as an anchor taken now (None: the log is empty)."""
    row = (
        await session.execute(
            text(
                "SELECT id, hash, key_id, extract(epoch FROM clock_timestamp()) "
                "FROM audit_log ORDER BY id DESC LIMIT 1"
            )
        )
    ).one_or_none()
    return None if row is None else Anchor(row[0], row[1], row[2], float(row[3]))


async def holds(session: AsyncSession, anchor: Anchor) -> bool:
    """Whether the anchored row is still there with the anchored hash."""
    found = (
        await session.execute(text("SELECT hash FROM audit_log WHERE id = :i"), {"i": anchor.id})
    ).scalar_one_or_none()
    return found == anchor.hash


async def verify_chain(
    session: AsyncSession, *, keys: Keyring | None = None, anchor: Anchor | None = None
) -> bool:
    """True when no audit row was edited, inserted out of chain or removed."""
    return (await check_chain(session, keys=keys, anchor=anchor)).ok
