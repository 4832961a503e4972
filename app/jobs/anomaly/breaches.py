"""Recording a breach of a tenant's anomaly rules: the flag with its evidence, the freeze
(the manual freeze's own, ``billing.freeze_account``), an audit entry, the metric and the
tenant's webhook. The swap path comes here only when the script reported a breach.

All database work is one transaction; the metric and the webhook follow its commit. The
webhook is sent by this process in the background (signed as job webhooks are, retried
with backoff within ``webhook_attempts``), not through the jobs' delivery outbox: a process
that dies while sending it loses that notice, and the flag stays in the review queue.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import Request

from app.auth.dependencies import ApiPrincipal
from app.core import audit
from app.core.db import Database
from app.core.errors import AccountFrozen
from app.core.settings import Settings
from app.jobs.anomaly import counters, metrics
from app.jobs.anomaly import repository as repo
from app.jobs.anomaly.schemas import flag_out
from app.webhooks import delivery
from app.webhooks import service as webhooks
from billing import service as billing

log = logging.getLogger(__name__)

ACTOR = "system:anomaly-rules"
EVENT = "anomaly.flag"


class PendingWebhooksProcessState:
    """The breach webhooks this process is sending: kept so that none is collected early."""

    tasks: set[asyncio.Task[None]] = set()


def evidence_of(
    breach: counters.Breach,
    *,
    source_hash: int | None,
    tokens: int | None,
    request_id: str,
) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "rule": breach.rule,
        "observed": breach.observed,
        "limit": breach.limit,
        "window_seconds": breach.window_seconds,
        "request_id": request_id,
        "tokens": tokens,
    }
    if breach.rule == "same_source_per_hour" and source_hash is not None:
        evidence["source_hash"] = f"{source_hash:016x}"
    return evidence


async def record(
    db: Database,
    settings: Settings,
    request: Request,
    user: ApiPrincipal,
    verdict: counters.Verdict,
    *,
    source_hash: int | None,
    tokens: int | None,
    request_id: str,
) -> None:
    """Flags, freeze and audit in one transaction, then the metric and the webhook.

    Raises AccountFrozen when the verdict refused the swap (a ``freeze`` rule), and when
    the user's account was frozen already: then nothing is recorded (the freeze answers
    first, as it does for a frozen user's swap that breaks nothing). When nothing could be
    recorded (the database failing, say), the rules may report these breaches again.
    """
    action = verdict.action or "flag"
    try:
        context, flags, secret = await _write(
            db,
            request,
            user,
            verdict,
            {"source_hash": source_hash, "tokens": tokens, "request_id": request_id},
        )
    except Exception:
        await _forget(request, user, verdict)
        raise
    for flag in flags:
        metrics.BREACHES.labels(flag.rule, action).inc()
        if secret is not None and context.webhook_url:
            _send_later(settings, context.webhook_url, secret, flag)
    if verdict.refused:
        broken = verdict.breaches[0]
        raise AccountFrozen(
            f"This Token account is frozen: rule {broken.rule} broken "
            f"({broken.observed} > {broken.limit})",
            details={"rule": broken.rule, "flag_ids": [f.id for f in flags]},
        )


async def _write(
    db: Database,
    request: Request,
    user: ApiPrincipal,
    verdict: counters.Verdict,
    facts: dict[str, Any],
) -> tuple[repo.BreachContext, list[repo.FlagRow], str | None]:
    """The transaction: a flag and an audit entry per breach, the freeze of a freeze rule;
    and the tenant's webhook secret when there is a webhook to send."""
    action = verdict.action or "flag"
    async with db.session() as session:
        context = await repo.breach_context(session, user.user_id)
        if context.account_status == "frozen":
            raise AccountFrozen("This Token account is frozen")
        flags = []
        for breach in verdict.breaches:
            flag = await repo.insert_flag(
                session,
                tenant_id=user.tenant_id,
                user_id=user.user_id,
                rule=breach.rule,
                observed=breach.observed,
                limit=breach.limit,
                action=action,
                evidence=evidence_of(breach, **facts),
            )
            await audit.record(
                session,
                request=request,
                actor=None,
                actor_label=ACTOR,
                action="anomaly.breach",
                tenant_id=user.tenant_id,
                target=f"user:{context.external_id}",
                details={
                    "rule": breach.rule,
                    "observed": breach.observed,
                    "limit": breach.limit,
                    "action": action,
                    "flag_id": flag.id if flag else None,
                },
            )
            if flag is not None:
                flags.append(flag)
        if verdict.refused:
            rules = ", ".join(b.rule for b in verdict.breaches)
            await billing.freeze_account(
                session, user.tenant_id, user.user_id, f"anomaly rule broken: {rules}"
            )
        secret = None
        if context.webhook_url and flags:
            secret = (await webhooks.webhook_secret(session, user.tenant_id)).secret
    return context, flags, secret


async def _forget(request: Request, user: ApiPrincipal, verdict: counters.Verdict) -> None:
    """Nothing was recorded: the rules may report these breaches again."""
    keys = counters.UserKeys(user.tenant_id, user.user_id)
    try:
        for breach in verdict.breaches:
            await counters.forget_breach(request.app.state.ratelimit_redis, keys, breach.rule)
    except Exception:  # noqa: BLE001 - the marks expire on their own within a week
        log.warning("could not clear the anomaly marks of user %s", user.user_id, exc_info=True)


def _send_later(settings: Settings, url: str, secret: str, flag: repo.FlagRow) -> None:
    payload = {
        "type": EVENT,
        "tenant_id": str(flag.tenant_id),
        "flag": flag_out(flag).model_dump(mode="json"),
    }
    task = asyncio.create_task(_send(settings, url, secret, payload))
    PendingWebhooksProcessState.tasks.add(task)
    task.add_done_callback(PendingWebhooksProcessState.tasks.discard)


async def _send(settings: Settings, url: str, secret: str, payload: dict[str, Any]) -> None:
    try:
        result = await delivery.deliver(
            url,
            payload,
            secret,
            attempts=settings.webhook_attempts,
            backoff_base_s=settings.webhook_backoff_base_seconds,
            timeout_s=settings.webhook_timeout_seconds,
            allow_hosts=settings.url_fetch_allow_hosts_set,
        )
    except Exception:  # noqa: BLE001 - a notice, never a failure of the swap
        log.exception("anomaly webhook to %s failed", url)
        metrics.WEBHOOKS.labels("failed").inc()
        return
    metrics.WEBHOOKS.labels("delivered" if result.delivered else "failed").inc()
    if not result.delivered:
        log.info("anomaly webhook to %s not delivered after %d tries", url, len(result.attempts))
