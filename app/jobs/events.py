"""PostgreSQL LISTEN/NOTIFY for jobs: one dedicated connection per listener, reconnecting.

Workers listen for new jobs and cancel requests; each API process keeps one listener for
"job finished" and hands each notification to the requests waiting for that job
(``JobWaiters``), so a thousand waiting requests cost one connection, not a thousand
polls. Notifications are sent inside transactions (``repository.notify``), so they are
heard exactly when the change is visible. They are a latency optimisation only: every
waiter also re-reads the row now and then, so a lost notification (or a listener that is
reconnecting) costs seconds, never correctness. ``wait_for_final`` is that wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg

from app.db import Database
from app.jobs import repository as repo
from app.jobs.models import FINAL_STATUSES
from app.jobs.repository import JobRecord, parse_done_payload

log = logging.getLogger(__name__)

HEALTH_CHECK_S = 30.0
MAX_BACKOFF_S = 10.0


def asyncpg_dsn(database_url: str) -> str:
    """asyncpg takes postgresql:// URLs; drop an SQLAlchemy driver suffix if one is given."""
    for prefix in ("postgresql+asyncpg://", "postgres+asyncpg://"):
        if database_url.startswith(prefix):
            return "postgresql://" + database_url[len(prefix) :]
    return database_url


class PgListener:
    """LISTEN on ``channels`` (name -> callback(payload)) over one dedicated connection.

    Reconnects with backoff when the connection drops, and calls ``on_reconnect`` after
    every (re)connect so the owner can look for what it missed meanwhile.
    """

    def __init__(
        self,
        database_url: str,
        channels: dict[str, Callable[[str], None]],
        *,
        on_reconnect: Callable[[], None] | None = None,
        name: str = "swapmeter-listener",
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._channels = channels
        self._on_reconnect = on_reconnect
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._connection: Any = None
        self.connected = asyncio.Event()

    async def start(self, *, wait_s: float = 5.0) -> None:
        """Start listening; waits up to ``wait_s`` for the first connection (not an error
        when the database is slow: the owner's polling covers the gap)."""
        self._task = asyncio.create_task(self._run(), name=self._name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), wait_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._close()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        self.connected.clear()
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 2)

    def _dispatch(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        callback = self._channels.get(channel)
        if callback is None:
            return
        try:
            callback(payload)
        except Exception:  # noqa: BLE001 - one bad callback must not kill the listener
            log.exception("listener callback for %s failed", channel)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            lost = asyncio.Event()
            try:
                self._connection = await asyncpg.connect(
                    self._dsn, timeout=10, server_settings={"application_name": self._name}
                )
                self._connection.add_termination_listener(functools.partial(_set_event, lost))
                for channel in self._channels:
                    await self._connection.add_listener(channel, self._dispatch)
                self.connected.set()
                backoff = 0.5
                if self._on_reconnect is not None:
                    self._on_reconnect()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), HEALTH_CHECK_S)
                    if not lost.is_set():
                        # A silently dead peer never triggers the termination listener.
                        await asyncio.wait_for(self._connection.execute("SELECT 1"), 10)
                log.warning("%s lost its database connection; reconnecting", self._name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect on anything
                log.warning("%s could not listen (%s); retrying", self._name, type(exc).__name__)
            await self._close()
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)


def _set_event(event: asyncio.Event, _connection: Any) -> None:
    event.set()


class JobWaiters:
    """Requests waiting for jobs to finish, woken by the job-finished notification.

    The notification usually carries the final job (migration 0005's trigger): the
    waiters get it as their future's result and need not read the row back. ``None``
    means "look at the row": the job was too large to announce, or notifications may
    have been missed (after a reconnect).
    """

    def __init__(self) -> None:
        self._futures: dict[str, set[asyncio.Future[JobRecord | None]]] = {}

    def job_finished(self, payload: str) -> None:
        job_id, record = parse_done_payload(payload)
        futures = self._futures.pop(job_id, ())
        if not futures:
            return  # most jobs finish with nobody waiting here: nothing to decode
        job = None
        if record:
            try:
                job = JobRecord.from_json(record)
            except (ValueError, TypeError, KeyError):
                log.warning("unreadable job-finished notification for %s", job_id)
        for future in futures:
            if not future.done():
                future.set_result(job)

    def wake_all(self) -> None:
        """After a reconnect: notifications may have been missed, let everyone re-check."""
        for job_id in list(self._futures):
            self.job_finished(job_id)

    @contextlib.contextmanager
    def watch(self, job_id: uuid.UUID) -> Iterator[asyncio.Future[JobRecord | None]]:
        """A future that completes when ``job_id`` is announced finished: with the final
        job, or None when the caller must read it."""
        key = str(job_id)
        future: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(key, set()).add(future)
        try:
            yield future
        finally:
            waiting = self._futures.get(key)
            if waiting is not None:
                waiting.discard(future)
                if not waiting:
                    del self._futures[key]
            if not future.done():
                future.cancel()

    @property
    def waiting(self) -> int:
        return sum(len(f) for f in self._futures.values())


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
