"""The swap path's anomaly check, run after the media are checked and before any Token is
held (``app/jobs/endpoints.py``): one Redis round trip when nothing breaks, no database.

The script answers which inputs the tenant's rules need (the source's perceptual hash,
the quoted Tokens); this process remembers it per tenant (``RULE_INPUTS``), so a swap
computes only what its tenant's rules use. A tenant this process has not seen yet gets
both computed. Two round trips happen only when the rules changed to need an input this
process did not compute, or when Redis lost the rules (they are loaded from the database
and passed in, a query and a round trip more, once).

Redis trouble lets the swap through unchecked (fail open, counted in
``swapmeter_anomaly_check_errors_total``): the rules watch for abuse; an outage of
Redis must not stop paid traffic that the rate limiter already let in.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from fastapi import Request
from redis.exceptions import RedisError

from app.auth.dependencies import ApiPrincipal
from app.core.db import Database
from app.jobs import intake
from app.jobs.anomaly import breaches, counters, metrics
from app.jobs.anomaly import repository as repo
from app.jobs.media import PreparedInputs
from billing import pricing

log = logging.getLogger(__name__)


@dataclass
class _Inputs:
    hash: bool = True
    tokens: bool = True


class RuleInputsProcessCache:
    """Per tenant, what its rules last said they need; process-wide, bounded (LRU)."""

    def __init__(self, max_tenants: int = 10_000) -> None:
        self.max_tenants = max_tenants
        self._tenants: OrderedDict[uuid.UUID, _Inputs] = OrderedDict()

    def get(self, tenant_id: uuid.UUID) -> _Inputs:
        inputs = self._tenants.get(tenant_id)
        if inputs is None:
            return _Inputs()
        self._tenants.move_to_end(tenant_id)
        return inputs

    def note(self, tenant_id: uuid.UUID, verdict: counters.Verdict) -> None:
        if verdict.status == "off":
            inputs = _Inputs(False, False)
        elif verdict.status in ("need", "checked"):
            inputs = _Inputs(verdict.needs_hash, verdict.needs_tokens)
        else:
            return
        self._tenants[tenant_id] = inputs
        self._tenants.move_to_end(tenant_id)
        while len(self._tenants) > self.max_tenants:
            self._tenants.popitem(last=False)


RULE_INPUTS = RuleInputsProcessCache()


@dataclass
class SwapFacts:
    """What the rules count of one swap, computed only when its tenant's rules need it."""

    source: bytes
    kind: str
    seconds: float | None
    enhance: bool
    source_hash: int | None = None
    tokens: int | None = None

    async def compute(self, db: Database, tenant_id: uuid.UUID, inputs: _Inputs) -> None:
        if inputs.hash and self.source_hash is None:
            self.source_hash = await source_hash(self.source)
        if inputs.tokens and self.tokens is None:
            self.tokens = await quoted_tokens(db, tenant_id, self)


async def source_hash(source: bytes) -> int:
    """The source image's perceptual hash, off the event loop (a decode: milliseconds)."""
    from inference.phash import perceptual_hash

    return await asyncio.to_thread(perceptual_hash, source)


async def quoted_tokens(db: Database, tenant_id: uuid.UUID, facts: SwapFacts) -> int:
    """What the swap will hold, priced as the hold will price it: the process's cached
    book (a query only when this process has not read the tenant's book yet, which the
    hold would read next anyway), at the peak multiplier in force (the queue depth is
    read only when the book has a peak, at most once a second per process)."""
    async with db.autocommit() as connection:
        book = await pricing.PROCESS_BOOKS.get(connection, tenant_id)
        price = await intake.priced(
            connection,
            book,
            facts.kind,
            enhance=facts.enhance,
            target_seconds=facts.seconds,
            tenant_id=tenant_id,
        )
    return price.tokens


async def check_swap(
    request: Request, user: ApiPrincipal, prepared: PreparedInputs, *, enhance: bool
) -> None:
    """Count this swap against its tenant's rules; record what it breaks.

    Raises AccountFrozen (403, nothing held) when it breaks a ``freeze`` rule, or when the
    user was frozen already.
    """
    settings = request.app.state.settings
    db: Database = request.app.state.db
    facts = SwapFacts(prepared.source, prepared.kind, prepared.seconds, enhance)
    request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    try:
        verdict = await _run(request, user, facts)
    except (RedisError, OSError, TimeoutError):
        metrics.CHECK_ERRORS.inc()
        log.warning("anomaly check unavailable, swap let through", exc_info=True)
        return
    if verdict.breaches:
        await breaches.record(
            db,
            settings,
            request,
            user,
            verdict,
            source_hash=facts.source_hash,
            tokens=facts.tokens,
            request_id=request_id,
        )


async def _run(request: Request, user: ApiPrincipal, facts: SwapFacts) -> counters.Verdict:
    redis = request.app.state.ratelimit_redis
    db: Database = request.app.state.db
    keys = counters.UserKeys(user.tenant_id, user.user_id)
    from inference.phash import SAME_IMAGE_DISTANCE  # OpenCV: loaded with the first swap

    loaded: counters.Rules | None = None
    await facts.compute(db, user.tenant_id, RULE_INPUTS.get(user.tenant_id))
    for _ in range(3):  # unknown, then need: at most three tries
        verdict = await counters.check(
            redis,
            keys,
            source_hash=facts.source_hash,
            tokens=facts.tokens,
            max_distance=SAME_IMAGE_DISTANCE,
            loaded=loaded,
        )
        RULE_INPUTS.note(user.tenant_id, verdict)
        if verdict.status == "unknown":
            loaded = await load_rules(db, user.tenant_id)
        elif verdict.status == "need":
            await facts.compute(
                db, user.tenant_id, _Inputs(verdict.needs_hash, verdict.needs_tokens)
            )
        else:
            return verdict
    return verdict


async def load_rules(db: Database, tenant_id: uuid.UUID) -> counters.Rules:
    """The tenant's rules from the database, as the script reads them (none: all off)."""
    async with db.autocommit() as connection:
        row = await repo.get_rules(connection, tenant_id)
    return script_rules(row)


def script_rules(row: repo.RulesRow | None) -> counters.Rules:
    if row is None:
        return counters.NO_RULES
    return counters.Rules(
        row.version,
        row.max_requests_per_minute or 0,
        row.max_same_source_per_hour or 0,
        row.max_tokens_per_day or 0,
        row.action,
    )
