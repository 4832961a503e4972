"""Swap jobs as use cases: price and submit (with the hold), read, cancel, finish, reap.

Money rules, all enforced here and nowhere else:

- A job and its hold are created in one transaction, with the Idempotency-Key row when
  the client sent one: there is never a job without a hold, a hold without a job, or a
  replayed request that holds twice.
- Finishing a job, capturing (or releasing) its hold and writing its result are one
  transaction, guarded by the worker's lease (``repository.finish``).
- What a job is charged (``charge_for``): a succeeded job, its whole hold, unless it is
  a video that delivered fewer frames than its probe listed (a damaged upload whose last
  frames do not decode: ``Outcome.short``). Such a video, or one canceled or failing on
  its own media part-way: the seconds *delivered*, that is the seconds of video fully
  processed (frames handed to the encoder / fps), each started second at the job's unit
  price, never more than the hold. Anything else (no face, undecodable input, our own
  failure, a lost worker, an image canceled before its result was committed) is
  released in full.

No inference imports here: the runner (app/jobs/runner.py) probes media and runs the
engine, and hands this module plain numbers. Services flush; the boundary commits.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db import Database
from app.errors import Conflict, IdempotencyKeyReused, NotFound
from app.idempotency import repository as idempotency
from app.jobs import metrics
from app.jobs import repository as repo
from app.jobs.models import FINAL_STATUSES
from app.jobs.repository import JobRecord
from app.storage import ResultStore
from app.webhooks import repository as webhooks
from billing import holds, pricing

# Failures that are ours, not the user's media: never charged, even part-way.
OUR_FAULT_CODES = frozenset(
    {
        "InternalError",
        "InferenceFailed",
        "WorkerLost",
        "ModelNotInstalled",
        "ModelLicenceRefused",
        "ModelHashMismatch",
        "ModelInvalid",
    }
)
SUBMIT_PATH = "POST /api/v1/swap-face"
CANCEL_TRIES = 3  # see cancel_job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quote:
    price_version: int
    unit_price: int  # per image, or per started video second
    tokens: int  # what the job holds


@dataclass(frozen=True)
class NewJob:
    id: uuid.UUID
    tenant_id: uuid.UUID
    user_id: int
    api_key_id: uuid.UUID | None
    kind: str
    params: dict[str, Any]
    source_key: str
    target_key: str
    target_seconds: float | None
    metered: bool
    webhook_url: str | None
    max_attempts: int
    request_id: str | None

    def values(self, quote: Quote) -> dict[str, Any]:
        """The jobs row, priced with ``quote``."""
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "api_key_id": self.api_key_id,
            "kind": self.kind,
            "params": self.params,
            "source_key": self.source_key,
            "target_key": self.target_key,
            "target_seconds": self.target_seconds,
            "metered": self.metered,
            "hold_reference": f"job:{self.id}" if self.metered else None,
            "price_version": quote.price_version,
            "unit_price": quote.unit_price,
            "tokens_held": quote.tokens if self.metered else 0,
            "webhook_url": self.webhook_url,
            "max_attempts": self.max_attempts,
            "request_id": self.request_id,
        }


@dataclass(frozen=True)
class IdempotencyClaim:
    """An Idempotency-Key and the fingerprint of the request that carries it."""

    scope: str
    key: str
    request_hash: str


class Replayed(Exception):  # noqa: N818 - a signal, not an error
    """The Idempotency-Key was used before with this same request: ``job_id`` answers it.

    ``answered``: the status the first request answered with (202, or the job's final
    answer: 200 or its error's), or None while that request is still answering.
    """

    def __init__(
        self, job_id: uuid.UUID, accepted: dict[str, Any], answered: int | None = None
    ) -> None:
        super().__init__(str(job_id))
        self.job_id = job_id
        self.accepted = accepted
        self.answered = answered


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as the runner saw it.

    ``storing``: the write of ``result_key``, when it is still running. The result is
    described in ``result`` already; the job's transaction commits only once the write
    succeeded (``finish_job``), so a job never says succeeded with its result missing.
    """

    status: str  # succeeded | failed | canceled
    seconds_done: float | None = None
    # A succeeded video that delivered fewer frames than its probe listed: charged the
    # seconds delivered, not the hold (``charge_for``).
    short: bool = False
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = None
    result_key: str | None = None
    storing: asyncio.Future[Any] | None = field(default=None, compare=False, repr=False)


# -- shaping -------------------------------------------------------------------------------


def job_urls(job_id: uuid.UUID) -> dict[str, str]:
    base = f"/api/v1/jobs/{job_id}"
    return {"get": base, "cancel": f"{base}/cancel", "result": f"{base}/result"}


def _iso(value: datetime | None) -> str | None:
    """UTC with a Z, the form pydantic gives the same instant (GET and webhooks agree)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def job_json(job: JobRecord) -> dict[str, Any]:
    """The contract's job object (GET /jobs/{id}, webhooks), JSON-ready."""
    error = None
    if job.status in ("failed", "canceled") and job.error_code:
        error = {"code": job.error_code, "message": job.error_message or job.error_code}
    return {
        "id": str(job.id),
        "status": job.status,
        "progress": round(min(1.0, max(0.0, job.progress)), 4),
        "kind": job.kind,
        "tokens_held": job.tokens_held,
        "tokens_charged": job.tokens_charged,
        "error": error,
        "result": job.result if job.status == "succeeded" else None,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "price_version": job.price_version,
        "target_seconds": job.target_seconds,
        "seconds_done": job.seconds_done,
        "cancel_requested": job.cancel_requested_at is not None,
        "urls": job_urls(job.id),
    }


def accepted_json(job: JobRecord) -> dict[str, Any]:
    """The 202 answer: queued, with where to poll and how to cancel."""
    return {
        "status": "queued",
        "job_id": str(job.id),
        "tokens_held": job.tokens_held,
        "urls": job_urls(job.id),
    }


# -- pricing and submission ----------------------------------------------------------------


def quote(
    book: pricing.PriceBook, kind: str, *, enhance: bool, target_seconds: float | None
) -> Quote:
    """Price a job with a book: one image, or ceil(seconds) × the per-second rate."""
    unit = book.unit_price("video" if kind == "video" else "image", enhance=enhance)
    tokens = unit if kind == "image" else pricing.video_price(unit, target_seconds or 0.0)
    return Quote(book.version, unit, tokens)


async def find_replay(session: AsyncSession, claim: IdempotencyClaim) -> Replayed | None:
    """The job an earlier request with this key created, before any work is redone.

    A key used with a different request is IdempotencyKeyReused (409).
    """
    stored = await idempotency.get(session, scope=claim.scope, key=claim.key)
    if stored is None:
        return None
    if stored.request_hash != claim.request_hash or stored.method_path != SUBMIT_PATH:
        raise IdempotencyKeyReused("This Idempotency-Key was already used with a different request")
    if stored.response_status is None or not isinstance(stored.response_body, dict):
        raise Conflict("A request with this Idempotency-Key is still in progress")
    answered = stored.response_status if stored.answered_at is not None else None
    return Replayed(uuid.UUID(stored.response_body["job_id"]), stored.response_body, answered)


async def note_answered(db: Database, claim: IdempotencyClaim, status: int) -> None:
    """Record the status a keyed swap's first request answered with (migration 0008).

    Never fails the answer itself: unrecorded, a replay waits for the job as it asks."""
    try:
        async with db.autocommit() as connection:
            await idempotency.mark_answered(
                connection, scope=claim.scope, key=claim.key, status=status
            )
    except Exception:  # noqa: BLE001 - the customer's answer matters more
        log.warning("could not record the answer to Idempotency-Key %r", claim.key, exc_info=True)


async def create_job(
    executor: AsyncSession | AsyncConnection,
    new: NewJob,
    claim: IdempotencyClaim | None,
    *,
    books: pricing.BookCache = pricing.PROCESS_BOOKS,
) -> JobRecord:
    """Claim the Idempotency-Key, price the job, hold its Tokens and queue it (which wakes
    a worker at commit): one transaction.

    Without a key that is one statement (billing's ``holds.hold_with``), which ``executor`` may
    run as a transaction of its own (an autocommit connection); with a key, ``executor``
    must be a session in a transaction. The price comes from the tenant's cached book and
    is written only while that book is still the newest; otherwise it is read again and
    the job priced again.

    Raises Replayed when a concurrent request with the same key committed first (this
    transaction must then roll back), InsufficientBalance / AccountFrozen from the hold.
    """
    if claim is not None:
        assert isinstance(executor, AsyncSession), "an Idempotency-Key needs a transaction"
        owned = await idempotency.claim(
            executor,
            scope=claim.scope,
            key=claim.key,
            method_path=SUBMIT_PATH,
            request_hash=claim.request_hash,
        )
        if not owned:
            replay = await find_replay(executor, claim)
            if replay is None:  # purged between the two statements
                raise Conflict("Idempotency key expired while in use; retry the request")
            raise replay
    book = await books.get(executor, new.tenant_id)
    while True:
        priced = quote(
            book,
            new.kind,
            enhance=bool(new.params.get("enhance")),
            target_seconds=new.target_seconds,
        )
        values = new.values(priced)
        if not new.metered:
            job = await repo.insert_job(executor, values)
            break
        row = await holds.hold_with(
            executor,
            repo.HELD_JOB,
            repo.RECORD_COLUMNS,
            repo.new_job_params(values),
            tenant_id=new.tenant_id,
            user_id=new.user_id,
            reference=values["hold_reference"],
            amount=values["tokens_held"],
            price_version=priced.price_version,
        )
        if row is None:
            book = await books.refresh(executor, new.tenant_id)  # prices changed: again
            continue
        job = JobRecord.from_row(row)
        break
    if claim is not None:
        assert isinstance(executor, AsyncSession)
        await idempotency.store_response(
            executor,
            scope=claim.scope,
            key=claim.key,
            status=202,
            body_json=orjson.dumps(accepted_json(job)).decode(),
        )
    return job


@dataclass(frozen=True)
class Submission:
    """A checked swap request, ready to be priced, stored and queued."""

    tenant_id: uuid.UUID
    user_id: int
    api_key_id: uuid.UUID | None
    kind: str  # image | video
    source: bytes
    source_ext: str
    target: bytes | Path  # a video arrives as the probed file
    target_ext: str
    target_seconds: float | None
    params: dict[str, Any]
    webhook_url: str | None
    request_id: str | None
    # Chosen by the caller when it must watch the job before it exists (``wait_for_final``).
    job_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def new_job(
        self, source_key: str, target_key: str, *, metered: bool, max_attempts: int
    ) -> NewJob:
        return NewJob(
            id=self.job_id,
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            api_key_id=self.api_key_id,
            kind=self.kind,
            params=self.params,
            source_key=source_key,
            target_key=target_key,
            target_seconds=self.target_seconds,
            metered=metered,
            webhook_url=self.webhook_url,
            max_attempts=max_attempts,
            request_id=self.request_id,
        )


async def submit(
    db: Database,
    store: ResultStore,
    submission: Submission,
    *,
    claim: IdempotencyClaim | None,
    metered: bool,
    max_attempts: int,
) -> JobRecord:
    """Store the inputs, then price, hold and create the job in one transaction.

    The inputs (keyed by the new job id) are stored first: the worker that the commit
    wakes finds them. If anything fails they are deleted again. Without an
    Idempotency-Key the transaction is a single statement, run without BEGIN and COMMIT
    round trips. Raises Replayed (a concurrent duplicate won), InsufficientBalance,
    AccountFrozen.
    """
    job_id = submission.job_id
    # Flat keys (no folder per job): nothing to create or remove around each job.
    source_key = f"inputs/{job_id.hex}-source.{submission.source_ext}"
    target_key = f"inputs/{job_id.hex}-target.{submission.target_ext}"
    new = submission.new_job(source_key, target_key, metered=metered, max_attempts=max_attempts)
    try:
        stored = await asyncio.gather(
            store.put(source_key, submission.source, "application/octet-stream", durable=False),
            store.put(target_key, submission.target, "application/octet-stream", durable=False),
            return_exceptions=True,  # both writes end before a failure cleans up
        )
        for outcome in stored:
            if isinstance(outcome, BaseException):
                raise outcome
        if claim is None:
            async with db.autocommit() as connection:
                return await create_job(connection, new, None)
        async with db.session() as session:
            return await create_job(session, new, claim)
    except BaseException:
        await delete_stored(store, source_key, target_key)
        raise


async def delete_stored(store: ResultStore, *keys: str) -> None:
    """Best effort, all at once: what is left behind is removed by the results cleanup."""

    async def delete(key: str) -> None:
        try:
            await store.delete(key)
        except Exception:  # noqa: BLE001
            log.warning("could not delete stored object %s", key, exc_info=True)

    await asyncio.gather(*(delete(key) for key in keys))


# -- reading -------------------------------------------------------------------------------


async def get_job(session: AsyncSession, user_id: int, job_id: uuid.UUID) -> JobRecord:
    """The caller's job; another user's job is NotFound, never Forbidden."""
    job = await repo.get_job(session, job_id, user_id=user_id)
    if job is None:
        raise NotFound("Job not found")
    return job


async def list_jobs(
    session: AsyncSession,
    user_id: int,
    *,
    status: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[JobRecord]:
    return await repo.list_jobs(session, user_id, status=status, before=before, limit=limit)


async def refresh_cluster_gauges(session: AsyncSession, housekeeping_s: float) -> None:
    """The cluster-wide gauges (jobs queued and processing, the Tokens they hold, the
    oldest one's wait, live workers) as the database has them now: every worker's
    housekeeping refreshes them, and so does an API process when scraped, so that no
    /metrics shows stale zeros."""
    counts = {row.kind: row for row in await repo.open_counts(session)}
    live = await repo.live_workers(session, within_s=max(15.0, 3 * housekeeping_s))
    for kind in metrics.KINDS:
        row = counts.get(kind)
        metrics.JOBS_IN_QUEUE.labels(kind).set(row.queued if row else 0)
        metrics.JOBS_PROCESSING.labels(kind).set(row.processing if row else 0)
        metrics.TOKENS_HELD.labels(kind).set(row.tokens_held if row else 0)
        metrics.OLDEST_QUEUED.labels(kind).set(float(row.oldest_queued_s) if row else 0.0)
    metrics.WORKERS_LIVE.set(live)


async def hold_mismatches(
    session: AsyncSession, tenant_id: uuid.UUID | None, limit: int
) -> list[dict[str, Any]]:
    """The ledger check's ``job_hold`` findings (``repo.disagreeing_with_holds``), in the
    shape of billing's own mismatches."""
    found = []
    for j in await repo.disagreeing_with_holds(session, tenant_id, limit):
        hold = (
            f"its hold {j.hold_reference!r} is missing"
            if j.hold_status is None
            else f"its hold is {j.hold_status}: amount {j.hold_amount}, captured {j.hold_captured}"
        )
        found.append(
            {
                "tenant_id": j.tenant_id,
                "account_id": j.account_id,
                "account_kind": j.account_kind,
                "user_id": j.user_id,
                "check": "job_hold",
                "stored": j.tokens_charged,
                "recomputed": j.hold_captured,
                "detail": f"job {j.id} is {j.status}, held {j.tokens_held} and charged "
                f"{j.tokens_charged}; {hold}",
            }
        )
    return found


async def wait_for_final(
    db: Database,
    events: Any,
    job_id: uuid.UUID,
    timeout_s: float,
    *,
    recheck_s: float = 5.0,
    watching: asyncio.Future[JobRecord | None] | None = None,
) -> JobRecord | None:
    """The job once final, or as it is after ``timeout_s``; None when it does not exist.

    Woken by the job-finished notification (``events.watch``), which usually carries the
    final job; every ``recheck_s`` it also reads the row, so a lost notification or
    listener costs latency, never a hang. No database connection is held while waiting.

    ``watching``: the caller's own watch on this job, registered before the job was
    created; its end cannot then go unheard, so the first read of the row is skipped.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout_s)
    if watching is not None:
        announced = await _announced(watching, min(max(0.0, timeout_s), recheck_s))
        if announced is not None:
            return announced
    while True:
        with events.watch(job_id) as finished:
            async with db.session() as session:
                job = await repo.get_job(session, job_id)
            if job is None or job.status in FINAL_STATUSES:
                return job
            remaining = deadline - loop.time()
            if remaining <= 0:
                return job
            announced = await _announced(finished, min(remaining, recheck_s))
            if announced is not None:
                return announced


async def _announced(
    finished: asyncio.Future[JobRecord | None], timeout_s: float
) -> JobRecord | None:
    """The final job the notification carried; None on timeout or when it carried none."""
    try:
        return await asyncio.wait_for(asyncio.shield(finished), timeout_s)
    except TimeoutError:
        return None


# -- cancel --------------------------------------------------------------------------------


async def cancel_job(
    session: AsyncSession, user_id: int, job_id: uuid.UUID, *, webhook_lease_s: float
) -> JobRecord:
    """Queued: canceled now, hold released in full. Processing: flagged; the worker stops
    at its next batch of frames and charges the delivered seconds. Already canceled: the
    job unchanged. Succeeded or failed: Conflict (409), nothing changes."""
    # A job may move between queued and processing while this runs (a worker claims it,
    # or gives it back as it shuts down): look again rather than call it finished.
    for _ in range(CANCEL_TRIES):
        job = await repo.cancel_queued(session, job_id, user_id)
        if job is not None:
            await _release_hold(session, job)
            await _announce_end(session, job, webhook_lease_s=0.0 if job.webhook_url else None)
            return job
        job = await repo.request_cancel(session, job_id, user_id)
        if job is not None:
            await repo.notify(session, repo.JOB_CANCEL_CHANNEL, str(job.id))
            return job
        job = await get_job(session, user_id, job_id)
        if job.status == "canceled":
            return job
        if job.status in FINAL_STATUSES:
            raise Conflict(
                f"The job already {job.status}; it can no longer be canceled", code="JobFinished"
            )
    raise Conflict("The job kept changing state; retry the cancel")


# -- finishing -----------------------------------------------------------------------------


def charge_for(job: JobRecord, outcome: Outcome) -> int:
    """Tokens to capture for this outcome (see the module docstring)."""
    if not job.metered:
        return 0
    if outcome.status == "succeeded" and not outcome.short:
        return job.tokens_held
    if job.kind != "video" or not outcome.seconds_done or outcome.error_code in OUR_FAULT_CODES:
        return 0
    return min(job.tokens_held, pricing.video_price(job.unit_price, outcome.seconds_done))


async def _release_hold(session: AsyncSession, job: JobRecord) -> None:
    """Give a job's whole hold back (a job that ended before it ran, or without a worker),
    the reason being its error code or status."""
    if job.metered and job.hold_reference is not None:
        await holds.release(
            session, job.tenant_id, job.hold_reference, reason=job.error_code or job.status
        )


async def _announce_end(
    session: AsyncSession, job: JobRecord, *, webhook_lease_s: float | None
) -> int | None:
    """Queue the webhook of a job that just became final, if it has one. (Whoever waits
    for the job is woken by the database itself: see migration 0005.)"""
    if job.webhook_url and webhook_lease_s is not None:
        return await webhooks.insert_delivery(session, job, job.webhook_url, webhook_lease_s)
    return None


async def finish_job(
    session: AsyncSession,
    job: JobRecord,
    worker_id: str,
    outcome: Outcome,
    *,
    webhook_lease_s: float,
) -> tuple[JobRecord, int | None] | None:
    """Record the outcome and settle the hold, in the caller's transaction.

    None when this worker no longer holds the job's lease: nothing was written, and the
    caller must discard its output. Otherwise the final job and its webhook delivery id.
    A metered job whose hold is no longer held (settled by someone else) is a Conflict:
    the caller's transaction rolls back and the job is not finished. When the result is
    still being written (``outcome.storing``), this returns once it is stored, and raises
    what the write raised (the caller's transaction must then roll back).
    """
    charge = charge_for(job, outcome)
    finished = await holds.capture_with(
        session,
        repo.FINISH,
        repo.RECORD_COLUMNS,
        repo.finish_params(
            job,
            worker_id,
            status=outcome.status,
            seconds_done=outcome.seconds_done,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            result=outcome.result,
            result_key=outcome.result_key,
        ),
        tenant_id=job.tenant_id,
        reference=job.hold_reference,
        amount=charge,
        reason=None if charge else (outcome.error_code or outcome.status),
    )
    if finished is None:
        return None
    row, settled = finished
    final = JobRecord.from_row(row)
    if final.metered and final.hold_reference is not None and settled.hold_id is None:
        raise Conflict(f"The hold {final.hold_reference!r} of job {final.id} is not held")
    delivery = await _announce_end(session, final, webhook_lease_s=webhook_lease_s)
    if outcome.storing is not None:
        await outcome.storing
    return final, delivery


async def end_abandoned_job(
    session: AsyncSession, *, webhook_lease_s: float, queue_timeout_s: float = 0.0
) -> tuple[JobRecord, int | None] | None:
    """Fail (WorkerLost, QueueTimeout) or cancel one job no worker will run and release
    its hold (``repo.end_abandoned``); None when there is none. One job per transaction:
    each locks one hold and one account, keeping billing's lock order (several releases
    in one transaction could lock accounts out of id order and deadlock with a bulk
    recharge)."""
    ended = await repo.end_abandoned(session, limit=1, queue_timeout_s=queue_timeout_s)
    if not ended:
        return None
    job = ended[0]
    await _release_hold(session, job)
    return job, await _announce_end(session, job, webhook_lease_s=webhook_lease_s)
