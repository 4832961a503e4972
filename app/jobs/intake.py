"""Taking a swap in: its price, its hold and its place in the queue, in one transaction.

The price is the tenant's book at the queue depth of the moment: with a peak in the book,
the multiplier in force (``PriceBook.multiplier_at``) applies to what is held and is
recorded on the hold and the job. The depth comes from a per-process count at most a
second old (``queue.QueueDepthCache``); a book without a peak never reads it.

A job and its hold are created in one transaction, with the Idempotency-Key row when the
client sent one: there is never a job without a hold, a hold without a job, or a
replayed request that holds twice. The hold itself is billing's (``billing.holds``):
without a key the job's insert and its hold are one statement.

The API side only: nothing here imports the worker or the engine (the media were checked
by ``app/jobs/media.py``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.db import Database
from app.core.idempotency.service import KeyClaim
from app.core.storage import ResultStore
from app.jobs import metrics
from app.jobs import repository as repo
from app.jobs.queue import PROCESS_QUEUE_DEPTH, QueueDepthCache
from app.jobs.repository import JobRecord
from app.jobs.results import delete_stored
from app.jobs.service import accepted_json
from billing import holds, pricing

log = logging.getLogger(__name__)

SUBMIT_PATH = "POST /api/v1/swap-face"


@dataclass(frozen=True)
class Quote:
    price_version: int
    unit_price: int  # per image, or per started video second
    base_tokens: int  # the price before the peak multiplier
    multiplier: Decimal  # the peak multiplier in force (1: none)
    tokens: int  # what the job holds: ceil(base_tokens × multiplier)
    video_seconds: int | None = None  # a video's started seconds, what it is billed for


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
            "multiplier": quote.multiplier,
            "tokens_held": quote.tokens if self.metered else 0,
            "webhook_url": self.webhook_url,
            "max_attempts": self.max_attempts,
            "request_id": self.request_id,
        }


def quote(
    book: pricing.PriceBook,
    kind: str,
    *,
    enhance: bool,
    target_seconds: float | None,
    queue_depth: int = 0,
) -> Quote:
    """Price a job with a book: one image, or ceil(seconds) × the per-second rate; then
    times the multiplier in force at ``queue_depth``, rounded up to a whole Token."""
    unit = book.unit_price("video" if kind == "video" else "image", enhance=enhance)
    seconds = None if kind == "image" else pricing.billable_seconds(target_seconds or 0.0)
    base = unit if seconds is None else unit * seconds
    multiplier = book.multiplier_at(queue_depth)
    return Quote(
        book.version, unit, base, multiplier, pricing.at_multiplier(base, multiplier), seconds
    )


async def priced(
    executor: AsyncSession | AsyncConnection,
    book: pricing.PriceBook,
    kind: str,
    *,
    enhance: bool,
    target_seconds: float | None,
    tenant_id: uuid.UUID,
    depths: QueueDepthCache = PROCESS_QUEUE_DEPTH,
) -> Quote:
    """``quote`` at the queue depth of the moment, read only when the book has a peak."""
    depth = 0 if book.peak is None else await depths.depth(executor)
    price = quote(book, kind, enhance=enhance, target_seconds=target_seconds, queue_depth=depth)
    if book.peak is not None:
        metrics.PRICE_MULTIPLIER.labels(str(tenant_id)).set(float(price.multiplier))
    return price


async def create_job(
    executor: AsyncSession | AsyncConnection,
    new: NewJob,
    claim: KeyClaim | None,
    *,
    books: pricing.BookCache = pricing.PROCESS_BOOKS,
    depths: QueueDepthCache = PROCESS_QUEUE_DEPTH,
) -> JobRecord:
    """Claim the Idempotency-Key, price the job, hold its Tokens and queue it (which wakes
    a worker at commit): one transaction.

    Without a key that is one statement (billing's ``holds.hold_with``), which ``executor`` may
    run as a transaction of its own (an autocommit connection); with a key, ``executor``
    must be a session in a transaction. The price comes from the tenant's cached book (and,
    with a peak in it, the cached queue depth) and is written only while that book is
    still the newest; otherwise it is read again and the job priced again.

    Raises Replay when a concurrent request with the same key committed first (this
    transaction must then roll back), InsufficientBalance / AccountFrozen from the hold.
    """
    if claim is not None:
        assert isinstance(executor, AsyncSession), "an Idempotency-Key needs a transaction"
        replay = await claim.take(executor)
        if replay is not None:
            raise replay
    book = await books.get(executor, new.tenant_id)
    while True:
        price = await priced(
            executor,
            book,
            new.kind,
            enhance=bool(new.params.get("enhance")),
            target_seconds=new.target_seconds,
            tenant_id=new.tenant_id,
            depths=depths,
        )
        values = new.values(price)
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
            price_version=price.price_version,
            multiplier=price.multiplier,
        )
        if row is None:
            book = await books.refresh(executor, new.tenant_id)  # prices changed: again
            continue
        job = JobRecord.from_row(row)
        break
    if claim is not None:
        assert isinstance(executor, AsyncSession)
        await claim.store_answer(executor, 202, accepted_json(job))
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
    claim: KeyClaim | None,
    metered: bool,
    max_attempts: int,
) -> JobRecord:
    """Store the inputs, then price, hold and create the job in one transaction.

    The inputs (keyed by the new job id) are stored first: the worker that the commit
    wakes finds them. If anything fails they are deleted again. Without an
    Idempotency-Key the transaction is a single statement, run without BEGIN and COMMIT
    round trips. Raises Replay (a concurrent duplicate won), InsufficientBalance,
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
