"""The admin side of the anomaly rules: setting a tenant's rules, the review queue of
flags, and resolving a flag (unfreeze or keep frozen). Tenant scoping as on every admin
route: another tenant's rules or flags are 404, an auditor reads and never writes.

A write commits first and then tells Redis (the swap path reads the rules there, and
counts there): Redis never holds a change the database does not.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import Request
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.dependencies import AdminPrincipal, ensure_tenant_access
from app.core import audit
from app.core.db import Database
from app.core.errors import Conflict, NotFound, ServiceUnavailable
from app.jobs.anomaly import counters, metrics
from app.jobs.anomaly import repository as repo
from app.jobs.anomaly.check import script_rules
from app.tenancy import service as tenancy
from billing import service as billing

log = logging.getLogger(__name__)

_LIMITS = ("max_requests_per_minute", "max_same_source_per_hour", "max_tokens_per_day")


async def get_rules(
    db: Database, admin: AdminPrincipal, tenant_id: uuid.UUID
) -> repo.RulesRow | None:
    ensure_tenant_access(admin, tenant_id, write=False)
    async with db.session() as session:
        await tenancy.get_tenant(session, tenant_id)
        return await repo.get_rules(session, tenant_id)


async def put_rules(
    db: Database,
    redis: Redis,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    values: dict[str, Any],
) -> repo.RulesRow:
    """Replace the tenant's rules (audited), then put them in force in Redis.

    503 ServiceUnavailable when Redis cannot take them: they are saved, and in force once
    the same PUT is sent again (or once Redis loses its copy and a swap loads them).
    """
    ensure_tenant_access(admin, tenant_id, write=True)
    async with db.session() as session:
        await tenancy.get_tenant(session, tenant_id)
        before = await repo.get_rules(session, tenant_id)
        after = await repo.put_rules(
            session,
            tenant_id,
            {
                "rpm": values.get("max_requests_per_minute"),
                "same": values.get("max_same_source_per_hour"),
                "tokens": values.get("max_tokens_per_day"),
                "action": values["action"],
            },
        )
        await audit.record(
            session,
            request=request,
            actor=admin,
            action="anomaly.rules_update",
            tenant_id=tenant_id,
            target=f"tenant:{tenant_id}",
            details={"from": _rules_json(before), "to": _rules_json(after)},
        )
    try:
        await counters.store_rules(redis, tenant_id, script_rules(after))
    except (RedisError, OSError) as exc:
        log.warning("anomaly rules of tenant %s saved, not in force: %s", tenant_id, exc)
        raise ServiceUnavailable(
            "The rules are saved but Redis did not take them: send the same request again",
            headers={"Retry-After": "1"},
        ) from exc
    return after


def _rules_json(row: repo.RulesRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {**{name: getattr(row, name) for name in _LIMITS}, "action": row.action}


async def list_flags(
    db: Database,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    *,
    status: str | None,
    user: str | None,
    before_id: int | None,
    limit: int,
) -> list[repo.FlagRow]:
    ensure_tenant_access(admin, tenant_id, write=False)
    async with db.session() as session:
        await tenancy.get_tenant(session, tenant_id)
        return await repo.list_flags(
            session,
            tenant_id,
            status=status,
            external_id=user,
            before_id=before_id,
            limit=limit,
        )


async def open_flag_count(session: AsyncSession, tenant_id: uuid.UUID, *, cap: int) -> int:
    """How many of the tenant's flags wait for a review, up to ``cap`` (the caller has
    checked the admin's reach to the tenant)."""
    return await repo.count_open(session, tenant_id, cap=cap)


async def resolve_flag(
    db: Database,
    redis: Redis,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    flag_id: int,
    *,
    action: str,
    note: str,
) -> repo.FlagRow:
    """Close an open flag.

    ``unfreeze``: the user's account is active again (unfrozen if frozen), this flag and
    the user's other open flags close, and the user's windows start afresh in Redis (so
    the counts that broke a rule do not freeze them again at their next swap).
    ``keep_frozen``: the account stays frozen (a flag raised by a ``flag`` rule freezes it
    now) and this flag closes; the rule may be reported again, and is, once the account
    is unfrozen and still over its limit. 409 Conflict when the flag is closed already.
    """
    ensure_tenant_access(admin, tenant_id, write=True)
    async with db.session() as session:
        await tenancy.get_tenant(session, tenant_id)
        flag = await repo.lock_flag(session, tenant_id, flag_id)
        if flag is None:
            raise NotFound("Flag not found")
        if flag.status != "open":
            raise Conflict(f"This flag was resolved already ({flag.resolution})")
        context = await repo.breach_context(session, flag.user_id)
        frozen = context.account_status == "frozen"
        if action == "unfreeze" and frozen:
            await billing.unfreeze_account(session, tenant_id, flag.user_id, note)
        elif action == "keep_frozen" and not frozen:
            await billing.freeze_account(
                session, tenant_id, flag.user_id, f"anomaly flag {flag.id}: {note}"
            )
        closed = await repo.resolve_flags(
            session,
            user_id=flag.user_id,
            flag_ids=None if action == "unfreeze" else [flag.id],
            resolution=action,
            note=note,
            resolved_by=admin.email,
        )
        await audit.record(
            session,
            request=request,
            actor=admin,
            action="anomaly.resolve",
            tenant_id=tenant_id,
            target=f"user:{flag.external_id}",
            details={
                "flag_id": flag.id,
                "resolution": action,
                "note": note,
                "closed": closed,
                "was_frozen": frozen,
            },
        )
        resolved = await repo.get_flag(session, flag.id)
    metrics.RESOLUTIONS.labels(action).inc()
    await _after_resolution(redis, resolved, action)
    return resolved


async def _after_resolution(redis: Redis, flag: repo.FlagRow, action: str) -> None:
    keys = counters.UserKeys(flag.tenant_id, flag.user_id)
    try:
        if action == "unfreeze":
            await counters.reset_user(redis, keys)
        else:
            await counters.forget_breach(redis, keys, flag.rule)
    except (RedisError, OSError):
        # The marks expire within a week; until then the rules do not report this user's
        # breaches again (the review already saw them).
        log.warning(
            "flag %s resolved; its counters were not reset in Redis", flag.id, exc_info=True
        )
