"""The whole ledger verification (billing's recomputation, every metered job against its
hold, the audit chain), run by ``/admin/ledger/verify`` and periodically by the workers,
and its latest result for Prometheus.

Workers take turns: every ``SWAPMETER_LEDGER_VERIFY_INTERVAL_SECONDS`` one of them (the
one that wins a Redis key set with NX) checks the whole ledger. The latest result of a
whole-ledger check, whoever ran it, is kept in Redis, and every process shows it as
cluster-wide gauges (aggregate with max), refreshed where the other cluster gauges are.
With Redis down no periodic check runs: the gauges go stale, and the staleness alert
fires beside the Redis one.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.dependencies import AdminPrincipal, ensure_tenant_access
from app.core import audit
from app.core.audit_anchor import AnchorPlaces
from app.core.db import Database
from billing import metrics, usage
from billing.verify import MAX_MISMATCHES, check_ledger, hold_mismatches

log = logging.getLogger(__name__)

LAST_KEY = "swapmeter:ledger-verify:last"
TURN_KEY = "swapmeter:ledger-verify:turn"


@dataclass
class Verification:
    accounts_checked: int
    mismatches: list[dict[str, Any]]
    audit_chain_ok: bool
    audit_chain_problem: str | None = None

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.audit_chain_ok


async def verify(
    session: AsyncSession, tenant_id: uuid.UUID | None, anchors: AnchorPlaces | None = None
) -> Verification:
    """Check the ledger of one tenant, or of all (``tenant_id`` None), and the audit chain
    against the newest anchor of its head that ``anchors`` holds."""
    ledger = await check_ledger(session, tenant_id)
    mismatches = ledger.mismatches + await hold_mismatches(session, tenant_id, MAX_MISMATCHES)
    mismatches += await usage.rollup_mismatches(session, tenant_id, MAX_MISMATCHES)
    anchor = await anchors.newest() if anchors is not None else None
    chain = await audit.check_chain(session, anchor=anchor)
    problem = None if chain.ok else f"audit row {chain.first_bad_id}: {chain.problem}"
    return Verification(ledger.accounts_checked, mismatches, chain.ok, problem)


async def verify_as(
    session: AsyncSession, request: Request, admin: AdminPrincipal, tenant_id: uuid.UUID | None
) -> tuple[Verification, uuid.UUID | None]:
    """The verification an admin asks for (``/admin/ledger/verify``, the dashboard's
    button): one tenant (404 outside the admin's reach), or every tenant for admins of
    the whole platform (an admin bound to a tenant checks that one). A whole-ledger result
    becomes the latest one operators see. Returns the result and the tenant checked."""
    if tenant_id is not None:
        ensure_tenant_access(admin, tenant_id, write=False)
    elif admin.tenant_id is not None:
        tenant_id = admin.tenant_id
    started = time.monotonic()
    state = request.app.state
    anchors = AnchorPlaces.of(state.settings, state.redis, getattr(state, "result_store", None))
    result = await verify(session, tenant_id, anchors)
    if tenant_id is None:
        await record(state.redis, result, time.monotonic() - started)
    return result, tenant_id


async def record(
    redis: Redis, result: Verification, seconds: float, *, last_key: str = LAST_KEY
) -> None:
    """Keep a whole-ledger result as the latest one, and show it in this process at once.
    Redis down: shown here only."""
    counts = dict.fromkeys(metrics.VERIFY_CHECKS, 0)
    for mismatch in result.mismatches:
        check = mismatch["check"]
        counts[check if check in counts else "other"] += 1
    counts["audit_chain"] = 0 if result.audit_chain_ok else 1
    last = {"at": time.time(), "ok": result.ok, "seconds": seconds, "mismatches": counts}
    metrics.show_verification(last)
    try:
        await redis.set(last_key, orjson.dumps(last))
    except (RedisError, OSError) as exc:
        log.warning("the ledger verification's result was not kept in Redis: %s", exc)


async def refresh_gauges(redis: Redis, *, last_key: str = LAST_KEY) -> None:
    """Show the latest whole-ledger result (from Redis) in this process's gauges."""
    try:
        raw = await redis.get(last_key)
    except (RedisError, OSError):
        return  # swapmeter_redis_up says why; the gauges keep what they had
    if raw:
        metrics.show_verification(orjson.loads(raw))


async def verify_if_due(
    db: Database,
    redis: Redis,
    interval_s: float,
    holder: str,
    *,
    turn_key: str = TURN_KEY,
    last_key: str = LAST_KEY,
    anchors: AnchorPlaces | None = None,
) -> bool:
    """Check the whole ledger when no process has within ``interval_s`` (the turn is a
    Redis key that expires then). Returns whether this call ran it. (The keys are
    parameters for tests, which share one Redis.)"""
    if interval_s <= 0:
        return False
    try:
        mine = await redis.set(turn_key, holder, nx=True, ex=max(1, round(interval_s)))
    except (RedisError, OSError):
        return False
    if not mine:
        return False
    started = time.monotonic()
    try:
        async with db.session() as session:
            result = await verify(session, None, anchors)
    except BaseException:
        with contextlib.suppress(RedisError, OSError):  # another worker tries next round
            await redis.delete(turn_key)
        raise
    await record(redis, result, time.monotonic() - started, last_key=last_key)
    if not result.ok:
        log.error(
            "ledger verification failed: %d mismatches%s (GET /api/v1/admin/ledger/verify "
            "lists them)",
            len(result.mismatches),
            "" if result.audit_chain_ok else f", audit chain broken ({result.audit_chain_problem})",
        )
    return True
