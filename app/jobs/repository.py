"""A job's row: what it holds (``JobRecord``), creating and reading it, and the channels
that announce it (a new job, a job's end, a cancel request).

The statements of the queue and its leases are in ``app/jobs/queue.py``; those that end a
job (finish, cancel, abandoned) in ``app/jobs/settle.py``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

JOBS_CHANNEL = "swapmeter_jobs"  # payload: the job kind; a new job is queued
# payload: "<job id>[ <final job as JSON>]"; it reached a final status. Sent by the
# database itself, by a trigger on jobs (migration 0005), heard at commit.
JOB_DONE_CHANNEL = "swapmeter_job_done"
JOB_CANCEL_CHANNEL = "swapmeter_job_cancel"  # payload: the job id; its owner asked to stop

JOB_COLUMNS = (
    "id, tenant_id, user_id, api_key_id, kind, status, progress, params, source_key,"
    " target_key, target_seconds, metered, hold_reference, price_version, unit_price,"
    " multiplier, tokens_held, tokens_charged, seconds_done, error_code, error_message, result,"
    " result_key, webhook_url, attempts, max_attempts, worker_id, leased_until,"
    " cancel_requested_at, created_at, started_at, finished_at"
)


@dataclass(frozen=True)
class JobRecord:
    id: uuid.UUID
    tenant_id: uuid.UUID
    user_id: int
    api_key_id: uuid.UUID | None
    kind: str
    status: str
    progress: float
    params: dict[str, Any]
    source_key: str
    target_key: str
    target_seconds: float | None
    metered: bool
    hold_reference: str | None
    price_version: int
    unit_price: int
    multiplier: Decimal  # the peak multiplier its Tokens were held at (1: none)
    tokens_held: int
    tokens_charged: int
    seconds_done: float | None
    error_code: str | None
    error_message: str | None
    result: dict[str, Any] | None
    result_key: str | None
    webhook_url: str | None
    attempts: int
    max_attempts: int
    worker_id: str | None
    leased_until: datetime | None
    cancel_requested_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})

    @classmethod
    def from_json(cls, data: bytes | str) -> JobRecord:
        """The job a job-finished notification carries (the row as PostgreSQL's to_jsonb
        writes it; columns JobRecord does not know are left out)."""
        row = orjson.loads(data)
        values = {name: row[name] for name in cls.__dataclass_fields__}
        for name in _UUID_FIELDS:
            if values[name] is not None:
                values[name] = uuid.UUID(values[name])
        for name in _TIME_FIELDS:
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        values["multiplier"] = Decimal(str(values["multiplier"]))  # NUMERIC, a JSON number
        return cls(**values)


_UUID_FIELDS = ("id", "tenant_id", "api_key_id")
_TIME_FIELDS = ("leased_until", "cancel_requested_at", "created_at", "started_at", "finished_at")


def record_or_none(row: Any) -> JobRecord | None:
    return JobRecord.from_row(row) if row is not None else None


def to_json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def parse_done_payload(payload: str) -> tuple[str, str]:
    """(job id, final job JSON or "") of a job-finished notification."""
    job_id, _, record = payload.partition(" ")
    return job_id, record


async def notify(session: AsyncSession, channel: str, payload: str) -> None:
    """Queued in the transaction: listeners hear it at commit, never for a rollback."""
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
    )


# -- creating and reading jobs -------------------------------------------------------------


# A new job's columns and values (parameters of the same names; params is JSON text).
_NEW_JOB_COLUMNS = (
    "id, tenant_id, user_id, api_key_id, kind, params, source_key, target_key, target_seconds,"
    " metered, hold_reference, price_version, unit_price, multiplier, tokens_held,"
    " webhook_url, max_attempts, request_id"
)
_NEW_JOB_VALUES = (
    ":id, :tenant_id, :user_id, :api_key_id, :kind, CAST(:params AS jsonb), :source_key,"
    " :target_key, :target_seconds, :metered, :hold_reference, :price_version, :unit_price,"
    " CAST(:multiplier AS numeric), :tokens_held, :webhook_url, :max_attempts, :request_id"
)

_INSERT_JOB = text(
    f"""
    INSERT INTO jobs ({_NEW_JOB_COLUMNS}) VALUES ({_NEW_JOB_VALUES})
    RETURNING {JOB_COLUMNS}, pg_notify(:channel, kind)
    """
)

# A held job: inserted, and queued, by the statement that holds its Tokens (billing's
# ``holds.hold_with``), only once the hold is made (one row per hold, ``h``).
HELD_JOB = (
    f"INSERT INTO jobs ({_NEW_JOB_COLUMNS}) SELECT {_NEW_JOB_VALUES} FROM h"
    f" RETURNING {JOB_COLUMNS}, pg_notify(:channel, kind)"
)
# What that statement answers of the job (its CTE is ``rec``).
RECORD_COLUMNS = ", ".join("rec." + c.strip() for c in JOB_COLUMNS.split(","))


def new_job_params(values: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a new job's row (``_INSERT_JOB``, ``HELD_JOB``)."""
    return {**values, "params": to_json(values["params"]), "channel": JOBS_CHANNEL}


async def insert_job(session: AsyncSession | AsyncConnection, values: dict[str, Any]) -> JobRecord:
    """Queue a job that holds nothing (metering off); the workers hear of it
    (JOBS_CHANNEL) when the transaction commits, the notification being part of the
    INSERT statement."""
    return JobRecord.from_row((await session.execute(_INSERT_JOB, new_job_params(values))).one())


async def get_job(
    session: AsyncSession, job_id: uuid.UUID, *, user_id: int | None = None
) -> JobRecord | None:
    """The job; with ``user_id``, only when that user owns it."""
    owner = "AND user_id = :user_id" if user_id is not None else ""
    row = (
        await session.execute(
            text(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id {owner}"),
            {"id": job_id, "user_id": user_id},
        )
    ).first()
    return record_or_none(row)


async def list_jobs(
    session: AsyncSession,
    user_id: int,
    *,
    status: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[JobRecord]:
    """The user's jobs, newest first, strictly before the ``before`` keyset position."""
    conditions = ["user_id = :user_id"]
    params: dict[str, Any] = {"user_id": user_id, "limit": limit}
    if status is not None:
        conditions.append("status = :status")
        params["status"] = status
    if before is not None:
        conditions.append("(created_at, id) < (:before_at, :before_id)")
        params["before_at"], params["before_id"] = before
    rows = await session.execute(
        text(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(conditions)} "
            "ORDER BY created_at DESC, id DESC LIMIT :limit"
        ),
        params,
    )
    return [JobRecord.from_row(r) for r in rows]


async def list_tenant_jobs(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    user_id: int | None,
    status: str | None,
    kind: str | None,
    since: datetime | None,
    until: datetime | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[JobRecord]:
    """A tenant's jobs, newest first, strictly before the ``before`` keyset position,
    created in ``[since, until)``. One index range scan whatever the tenant's size:
    ``(user_id, created_at, id)`` for one user, ``(tenant_id, status, created_at, id)``
    for one status, else ``(tenant_id, created_at, id)`` (migration 0018); ``kind`` is a
    filter on that scan."""
    conditions = ["tenant_id = :tenant_id"]
    params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit}
    optional = {
        "user_id = :user_id": ("user_id", user_id),
        "status = :status": ("status", status),
        "kind = :kind": ("kind", kind),
        "created_at >= :since": ("since", since),
        "created_at < :until": ("until", until),
    }
    for condition, (name, value) in optional.items():
        if value is not None:
            conditions.append(condition)
            params[name] = value
    if before is not None:
        conditions.append("(created_at, id) < (:before_at, :before_id)")
        params["before_at"], params["before_id"] = before
    rows = await session.execute(
        text(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(conditions)} "
            "ORDER BY created_at DESC, id DESC LIMIT :limit"
        ),
        params,
    )
    return [JobRecord.from_row(r) for r in rows]
