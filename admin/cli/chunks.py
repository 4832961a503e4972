"""Sending a file's rows in chunks: one after another, or a few at a time (``--parallel``),
each under its own Idempotency-Key, with the progress bar advanced as each one lands.

Keys are ``<base>-<chunk number>``, ``base`` being the sha256 of the file's content (or of
it and ``--run-name``, which makes the same file a new recharge). Run again after an
interruption, the same chunks carry the same keys: the service answers those it already
applied with their first report (``Idempotent-Replayed: true``) and applies nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from admin.cli.client import Client, Response

MAX_CHUNK = 10_000  # the service's limit per call


@dataclass(frozen=True)
class Chunk:
    number: int  # 1-based
    start: int  # index of its first row in the good rows
    end: int
    grant: dict[str, str] = field(default_factory=dict)  # its rows' expires_at and label


def split(count: int, size: int) -> list[Chunk]:
    return split_groups([(0, count, {})], size)


def split_groups(groups: Sequence[tuple[int, int, dict[str, str]]], size: int) -> list[Chunk]:
    """Chunks of at most ``size`` rows that never span two groups (``(start, end, grant)``
    ranges of the good rows), numbered 1, 2, ... across all of them."""
    plan: list[Chunk] = []
    for first, last, grant in groups:
        for start in range(first, last, size):
            plan.append(Chunk(len(plan) + 1, start, min(start + size, last), grant))
    return plan


def key_base(sha256: str, *options: object) -> str:
    """The file's digest, or a digest of it and ``options`` when any is set."""
    if not any(o is not None for o in options):
        return sha256
    mixed = ":".join([sha256, *(repr(o) for o in options)])
    return hashlib.sha256(mixed.encode()).hexdigest()


def send(
    client: Client,
    chunks: list[Chunk],
    request: Callable[[Client, Chunk], Response],
    *,
    parallel: int,
) -> Iterator[tuple[Chunk, Response]]:
    """Yield (chunk, response) as each chunk lands; at most ``parallel`` in flight. A
    CliError or Ctrl-C stops sending at once (chunks in flight may still land)."""
    if parallel <= 1:
        for chunk in chunks:
            yield chunk, request(client, chunk)
        return
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="chunk")
    pending: dict[Future[Response], Chunk] = {}
    todo = iter(chunks)
    try:
        for chunk in todo:
            pending[pool.submit(request, client, chunk)] = chunk
            if len(pending) >= parallel:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                chunk = pending.pop(future)
                yield chunk, future.result()
                following = next(todo, None)
                if following is not None:
                    pending[pool.submit(request, client, following)] = following
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
