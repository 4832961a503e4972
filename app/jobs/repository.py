"""Every SQL statement of the jobs domain: the queue, leases, deliveries, heartbeats.

The queue is the ``jobs`` table. A worker claims the oldest open job it may run with
``FOR UPDATE SKIP LOCKED`` in one statement (two workers never wait on, or take, the same
row), and every later write of that worker names its lease (``worker_id`` and
``attempts``): a worker that lost its lease, because it stalled past ``leased_until`` and
another worker took the job, matches no row and so can neither finish the job nor charge
for it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

JOBS_CHANNEL = "swapmeter_jobs"  # payload: the job kind; a new job is queued
# payload: "<job id>[ <final job as JSON>]"; it reached a final status. Sent by the
# database itself, by a trigger on jobs (migration 0005), heard at commit.
JOB_DONE_CHANNEL = "swapmeter_job_done"
JOB_CANCEL_CHANNEL = "swapmeter_job_cancel"  # payload: the job id; its owner asked to stop

_JOB_COLUMNS = (
    "id, tenant_id, user_id, api_key_id, kind, status, progress, params, source_key,"
    " target_key, target_seconds, metered, hold_reference, price_version, unit_price,"
    " tokens_held, tokens_charged, seconds_done, error_code, error_message, result,"
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
        return cls(**values)


_UUID_FIELDS = ("id", "tenant_id", "api_key_id")
_TIME_FIELDS = ("leased_until", "cancel_requested_at", "created_at", "started_at", "finished_at")


def _job(row: Any) -> JobRecord | None:
    return JobRecord.from_row(row) if row is not None else None


def _json(value: Any) -> str | None:
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
    " metered, hold_reference, price_version, unit_price, tokens_held, webhook_url,"
    " max_attempts, request_id"
)
_NEW_JOB_VALUES = (
    ":id, :tenant_id, :user_id, :api_key_id, :kind, CAST(:params AS jsonb), :source_key,"
    " :target_key, :target_seconds, :metered, :hold_reference, :price_version, :unit_price,"
    " :tokens_held, :webhook_url, :max_attempts, :request_id"
)

_INSERT_JOB = text(
    f"""
    INSERT INTO jobs ({_NEW_JOB_COLUMNS}) VALUES ({_NEW_JOB_VALUES})
    RETURNING {_JOB_COLUMNS}, pg_notify(:channel, kind)
    """
)

# A held job: inserted, and queued, by the statement that holds its Tokens (billing's
# ``holds.hold_with``), only once the hold is made (one row per hold, ``h``).
HELD_JOB = (
    f"INSERT INTO jobs ({_NEW_JOB_COLUMNS}) SELECT {_NEW_JOB_VALUES} FROM h"
    f" RETURNING {_JOB_COLUMNS}, pg_notify(:channel, kind)"
)
# What that statement answers of the job (its CTE is ``rec``).
RECORD_COLUMNS = ", ".join("rec." + c.strip() for c in _JOB_COLUMNS.split(","))


def new_job_params(values: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a new job's row (``_INSERT_JOB``, ``HELD_JOB``)."""
    return {**values, "params": _json(values["params"]), "channel": JOBS_CHANNEL}


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
            text(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = :id {owner}"),
            {"id": job_id, "user_id": user_id},
        )
    ).first()
    return _job(row)


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
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {' AND '.join(conditions)} "
            "ORDER BY created_at DESC, id DESC LIMIT :limit"
        ),
        params,
    )
    return [JobRecord.from_row(r) for r in rows]


# -- the queue: claim, lease, finish -------------------------------------------------------

# Take the oldest open job this worker may run, in one statement: queued ones, and
# processing ones whose worker let the lease run out (it died or stalled), while attempts
# are left; not held back by run_after (its tenant was at the concurrency cap), not of a
# tenant this worker just found at its cap, nor of a suspended tenant (housekeeping
# cancels those). SKIP LOCKED: two workers never wait on, or
# take, the same row. The claim does not wait for its WAL to reach the disk
# (synchronous_commit off, for this transaction only): lost in a database crash, the job
# is simply queued again, and its lease guard keeps the lost claimant from finishing it.
_CLAIM_NEXT = text(
    f"""
    UPDATE jobs
    SET status = 'processing', attempts = attempts + 1, worker_id = :worker_id,
        leased_until = now() + make_interval(secs => :lease_s),
        started_at = coalesce(started_at, now()), run_after = NULL
    WHERE id = (
        SELECT id FROM jobs
        WHERE status IN ('queued', 'processing')
          AND (status = 'queued' OR leased_until < now())
          AND attempts < max_attempts
          AND cancel_requested_at IS NULL
          AND (run_after IS NULL OR run_after <= now())
          AND NOT (tenant_id = ANY(CAST(:skip_tenants AS uuid[])))
          AND (SELECT status FROM tenants WHERE tenants.id = jobs.tenant_id) = 'active'
        ORDER BY created_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING {_JOB_COLUMNS}, extract(epoch FROM now() - created_at) AS queue_wait_s,
              set_config('synchronous_commit', 'off', true) AS commit_mode
    """
)


async def claim_next(
    session: AsyncSession,
    worker_id: str,
    lease_s: float,
    skip_tenants: list[uuid.UUID],
) -> tuple[JobRecord, float] | None:
    """Lease the next job to ``worker_id`` (processing, one more attempt); None when idle.

    Returns the job and how long it waited in the queue (seconds, by the database clock).
    """
    row = (
        await session.execute(
            _CLAIM_NEXT,
            {"worker_id": worker_id, "lease_s": lease_s, "skip_tenants": skip_tenants},
        )
    ).first()
    if row is None:
        return None
    return JobRecord.from_row(row), float(row.queue_wait_s)


async def renew_lease(
    session: AsyncSession,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    lease_s: float,
    progress: float,
) -> bool | None:
    """Extend the lease and record progress. None: the lease is lost (stop, discard);
    otherwise whether the owner asked to cancel."""
    row = (
        await session.execute(
            text(
                """
                UPDATE jobs
                SET leased_until = now() + make_interval(secs => :lease_s),
                    progress = greatest(progress, least(:progress, 1.0))
                WHERE id = :id AND worker_id = :worker_id AND attempts = :attempt
                  AND status = 'processing'
                RETURNING cancel_requested_at IS NOT NULL AS cancel_requested
                """
            ),
            {
                "id": job_id,
                "worker_id": worker_id,
                "attempt": attempt,
                "lease_s": lease_s,
                "progress": progress,
            },
        )
    ).first()
    return None if row is None else bool(row.cancel_requested)


async def give_back(
    session: AsyncSession,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    *,
    delay_s: float = 0.0,
) -> bool:
    """Return a job this worker holds to the queue at once, the attempt not counted: on
    shutdown (instead of letting the lease run out), or when its tenant is at the
    concurrency cap (then held back ``delay_s``). A first attempt has not started.

    Not a job whose owner asked to cancel it (False): queued again it would never be
    claimed nor ended. It stays leased, and once the lease runs out housekeeping cancels
    it and releases its hold (``end_abandoned``)."""
    row = (
        await session.execute(
            text(
                """
                UPDATE jobs
                SET status = 'queued', attempts = attempts - 1, worker_id = NULL,
                    leased_until = NULL, progress = 0,
                    started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END,
                    run_after = CASE WHEN :delay > 0
                                     THEN now() + make_interval(secs => :delay) END
                WHERE id = :id AND worker_id = :worker_id AND attempts = :attempt
                  AND status = 'processing' AND cancel_requested_at IS NULL
                RETURNING id
                """
            ),
            {"id": job_id, "worker_id": worker_id, "attempt": attempt, "delay": delay_s},
        )
    ).first()
    return row is not None


# Write the outcome, guarded by the lease: billing's ``holds.capture_with`` settles the
# job's hold in the same statement, only when this updated the job's row.
FINISH = f"""
    UPDATE jobs
    SET status = CAST(:status AS varchar), tokens_charged = :amount,
        -- Stopped part-way: the share delivered (and charged), not the last report.
        progress = CASE WHEN CAST(:status AS varchar) = 'succeeded' THEN 1.0
                        WHEN CAST(:seconds_done AS float8) IS NOT NULL AND target_seconds > 0
                        THEN least(1.0, CAST(:seconds_done AS float8) / target_seconds)
                        ELSE progress END,
        seconds_done = :seconds_done, error_code = :error_code,
        error_message = :error_message, result = CAST(:result AS jsonb),
        result_key = :result_key, finished_at = now(), leased_until = NULL
    WHERE id = :id AND worker_id = :worker_id AND attempts = :attempt
      AND status = 'processing'
    RETURNING {_JOB_COLUMNS}
"""


def finish_params(
    job: JobRecord,
    worker_id: str,
    *,
    status: str,
    seconds_done: float | None,
    error_code: str | None,
    error_message: str | None,
    result: dict[str, Any] | None,
    result_key: str | None,
) -> dict[str, Any]:
    """FINISH's own parameters (its ``:amount``, the Tokens charged, is billing's)."""
    return {
        "id": job.id,
        "worker_id": worker_id,
        "attempt": job.attempts,
        "status": status,
        "seconds_done": seconds_done,
        "error_code": error_code,
        "error_message": error_message,
        "result": _json(result),
        "result_key": result_key,
    }


async def cancel_queued(session: AsyncSession, job_id: uuid.UUID, user_id: int) -> JobRecord | None:
    """Cancel a job no worker holds yet. A claim in progress holds the row lock: this
    waits for it, then finds the job processing and matches nothing."""
    row = (
        await session.execute(
            text(
                f"""
                UPDATE jobs
                SET status = 'canceled', cancel_requested_at = now(), finished_at = now(),
                    error_code = 'Canceled', error_message = 'Canceled before it started'
                WHERE id = :id AND user_id = :user_id AND status = 'queued'
                RETURNING {_JOB_COLUMNS}
                """
            ),
            {"id": job_id, "user_id": user_id},
        )
    ).first()
    return _job(row)


async def request_cancel(
    session: AsyncSession, job_id: uuid.UUID, user_id: int
) -> JobRecord | None:
    """Flag a running job; its worker stops at the next batch of frames."""
    row = (
        await session.execute(
            text(
                f"""
                UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, now())
                WHERE id = :id AND user_id = :user_id AND status = 'processing'
                RETURNING {_JOB_COLUMNS}
                """
            ),
            {"id": job_id, "user_id": user_id},
        )
    ).first()
    return _job(row)


async def end_abandoned(
    session: AsyncSession, limit: int = 100, *, queue_timeout_s: float = 0.0
) -> list[JobRecord]:
    """Jobs nobody will run, ended here in one statement (the caller settles their holds):

    - processing, its lease run out with no attempt left: failed, WorkerLost; or with a
      cancel pending: canceled;
    - queued (or its lease run out) while its tenant is suspended: canceled (a suspension
      stops new work; jobs running on a live worker finish);
    - when ``queue_timeout_s`` > 0, still queued that long after it was submitted: failed,
      QueueTimeout.
    """
    rows = await session.execute(
        text(
            f"""
            WITH lost AS (
                SELECT j.id,
                       CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'Canceled'
                            WHEN j.status = 'processing' AND j.attempts >= j.max_attempts
                                THEN 'WorkerLost'
                            WHEN t.status <> 'active' THEN 'Suspended'
                            ELSE 'QueueTimeout' END AS why
                FROM jobs j JOIN tenants t ON t.id = j.tenant_id
                WHERE j.status IN ('queued', 'processing')
                  AND ((j.status = 'processing' AND j.leased_until < now()
                        AND (j.attempts >= j.max_attempts OR j.cancel_requested_at IS NOT NULL
                             OR t.status <> 'active'))
                       OR (j.status = 'queued' AND t.status <> 'active')
                       OR (j.status = 'queued' AND :queue_timeout > 0
                           AND j.created_at < now() - make_interval(secs => :queue_timeout)))
                ORDER BY j.created_at, j.id
                LIMIT :limit
                FOR UPDATE OF j SKIP LOCKED
            )
            UPDATE jobs j
            SET status = CASE WHEN lost.why IN ('WorkerLost', 'QueueTimeout') THEN 'failed'
                              ELSE 'canceled' END,
                error_code = CASE WHEN lost.why = 'Suspended' THEN 'Canceled' ELSE lost.why END,
                error_message = CASE lost.why
                    WHEN 'WorkerLost' THEN 'The workers running this job stopped '
                         || j.attempts || ' time(s); its Tokens were released'
                    WHEN 'Canceled' THEN 'Canceled; its worker stopped before it could confirm'
                    WHEN 'Suspended' THEN 'Canceled: the tenant was suspended; its '
                         || 'Tokens were released'
                    ELSE :queue_message END,
                cancel_requested_at = CASE WHEN lost.why = 'Suspended' THEN now()
                                           ELSE j.cancel_requested_at END,
                finished_at = now(), leased_until = NULL, run_after = NULL
            FROM lost WHERE j.id = lost.id
            RETURNING {", ".join("j." + c.strip() for c in _JOB_COLUMNS.split(","))}
            """
        ),
        {
            "limit": limit,
            "queue_timeout": queue_timeout_s,
            "queue_message": (
                f"No worker ran this job within {queue_timeout_s / 3600:g} h of its "
                "submission; its Tokens were released"
            ),
        },
    )
    return [JobRecord.from_row(r) for r in rows]


async def disagreeing_with_holds(
    session: AsyncSession, tenant_id: uuid.UUID | None, limit: int
) -> list[Any]:
    """Metered jobs (all, or one tenant's) whose Tokens disagree with their hold: no hold,
    ``tokens_held`` other than the hold's amount, or ended while the hold is still held
    or with ``tokens_charged`` other than what the hold captured."""
    of_tenant = "AND j.tenant_id = :tenant_id" if tenant_id is not None else ""
    rows = await session.execute(
        text(
            f"""
            SELECT j.tenant_id, j.id, j.status, j.tokens_held, j.tokens_charged,
                   j.hold_reference, h.account_id, a.kind AS account_kind, a.user_id,
                   h.status AS hold_status, h.amount AS hold_amount,
                   h.captured AS hold_captured
            FROM jobs j
            LEFT JOIN holds h ON h.tenant_id = j.tenant_id AND h.reference = j.hold_reference
            LEFT JOIN accounts a ON a.id = h.account_id
            WHERE j.metered AND j.hold_reference IS NOT NULL {of_tenant}
              AND (h.id IS NULL OR h.amount <> j.tokens_held
                   OR (j.status IN ('succeeded', 'failed', 'canceled')
                       AND (h.status = 'held' OR h.captured <> j.tokens_charged)))
            ORDER BY j.created_at, j.id
            LIMIT :limit
            """
        ),
        {"tenant_id": tenant_id, "limit": limit},
    )
    return list(rows)


async def open_counts(session: AsyncSession) -> list[Any]:
    """(kind, queued, processing, tokens_held, oldest_queued_s) over every open job: one
    scan of the small open index."""
    rows = await session.execute(
        text(
            """
            SELECT kind,
                   count(*) FILTER (WHERE status = 'queued') AS queued,
                   count(*) FILTER (WHERE status = 'processing') AS processing,
                   coalesce(sum(tokens_held), 0) AS tokens_held,
                   -- Waiting for a worker: not a job held back until run_after (its
                   -- tenant at its cap), which is no sign of missing workers.
                   coalesce(extract(epoch FROM now() - min(coalesce(run_after, created_at))
                                    FILTER (WHERE status = 'queued'
                                            AND (run_after IS NULL OR run_after <= now()))),
                            0) AS oldest_queued_s
            FROM jobs WHERE status IN ('queued', 'processing')
            GROUP BY kind
            """
        )
    )
    return list(rows)


# -- workers -----------------------------------------------------------------------------


async def heartbeat(
    session: AsyncSession,
    worker_id: str,
    *,
    hostname: str,
    pid: int,
    concurrency: int,
    running: int,
) -> None:
    await session.execute(
        text(
            """
            INSERT INTO workers (id, hostname, pid, concurrency, running)
            VALUES (:id, :hostname, :pid, :concurrency, :running)
            ON CONFLICT (id) DO UPDATE
            SET running = excluded.running, concurrency = excluded.concurrency,
                last_seen_at = now()
            """
        ),
        {
            "id": worker_id,
            "hostname": hostname,
            "pid": pid,
            "concurrency": concurrency,
            "running": running,
        },
    )


async def remove_worker(session: AsyncSession, worker_id: str) -> None:
    await session.execute(text("DELETE FROM workers WHERE id = :id"), {"id": worker_id})


async def live_workers(session: AsyncSession, within_s: float) -> int:
    row = (
        await session.execute(
            text(
                "SELECT count(*) FROM workers "
                "WHERE last_seen_at > now() - make_interval(secs => :within)"
            ),
            {"within": within_s},
        )
    ).one()
    return int(row[0])


async def forget_dead_workers(session: AsyncSession, older_than_s: float) -> int:
    row = (
        await session.execute(
            text(
                "WITH gone AS (DELETE FROM workers "
                "WHERE last_seen_at < now() - make_interval(secs => :older) RETURNING 1) "
                "SELECT count(*) FROM gone"
            ),
            {"older": older_than_s},
        )
    ).one()
    return int(row[0])
