"""Operations routes: liveness (``/healthz``), readiness (``/readyz``) and Prometheus
metrics (``/metrics``), outside the versioned API."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from app.core import metrics, ratelimit
from app.core.audit_anchor import AnchorPlaces
from app.core.audit_anchor import refresh_gauges as refresh_anchor_gauges
from app.core.errors import Unauthorized
from app.jobs.queue import refresh_cluster_gauges
from billing import ledger_verify

log = logging.getLogger("swapmeter")

router = APIRouter(tags=["operations"])


class Readiness(BaseModel):
    """What ``/readyz`` answers, ready (200) or not (503, with ``Retry-After``)."""

    status: Literal["ready", "degraded", "not_ready"]
    checks: dict[str, str]  # database, redis: "ok" or "error: <reason>"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: see `checks`"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Ready when PostgreSQL answers, and Redis too where requests need it.

    With Redis down and rate limits failing open (the default) this process still
    serves every request, only unthrottled: it stays ready (200, ``"degraded"``), so
    that a Redis blip does not take every API pod out of its Service. Failing closed,
    it would refuse swaps, so it is not ready (503).
    """
    checks: dict[str, str] = {}
    try:
        async with request.app.state.db.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), 2)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    redis_error = await ratelimit.ping(request.app.state.redis)
    checks["redis"] = "ok" if redis_error is None else f"error: {redis_error}"
    needs_redis = not request.app.state.settings.rate_limit_fail_open
    ready = checks["database"] == "ok" and (redis_error is None or not needs_redis)
    status = "not_ready" if not ready else "ready" if redis_error is None else "degraded"
    return JSONResponse(
        {"status": status, "checks": checks},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    settings = request.app.state.settings
    if not metrics.bearer_ok(request.headers.get("authorization"), settings.metrics_token):
        raise Unauthorized("/metrics needs Authorization: Bearer <SWAPMETER_METRICS_TOKEN>")
    try:
        async with request.app.state.db.session() as session:
            await refresh_cluster_gauges(
                session, settings.jobs_housekeeping_seconds, settings.jobs_lease_seconds
            )
        metrics.DATABASE_UP.set(1)
    except Exception:  # noqa: BLE001 - the other metrics are still worth serving
        metrics.DATABASE_UP.set(0)
        log.warning("cluster gauges not refreshed", exc_info=True)
    # swapmeter_redis_up, then the latest ledger verification (kept in Redis)
    if await ratelimit.ping(request.app.state.redis, timeout_s=1.0) is None:
        await ledger_verify.refresh_gauges(request.app.state.redis)
        # The anchored audit head, as the workers keep it in Redis.
        await refresh_anchor_gauges(AnchorPlaces.of(settings, request.app.state.redis, None))
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
