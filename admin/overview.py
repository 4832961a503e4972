"""The operators' overview of one tenant over a period: Tokens, users, jobs and the queue.

Every figure comes from a bounded read (docs/dashboard.md, "Overview"): Tokens and jobs
by day from the usage rollups (``billing.usage``), Tokens held now from the open holds,
active users from ``usage_last_active``, the queue from the open jobs' index, run times
and jobs per hour from one indexed range of the tenant's recent jobs (``app.jobs.stats``),
open anomaly flags from their partial index, counted up to ``FLAGS_COUNTED``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.dependencies import AdminPrincipal, ensure_tenant_access
from app.core.errors import NotFound
from app.core.settings import Settings
from app.jobs import queue, stats
from app.jobs.anomaly import service as anomaly
from app.tenancy import service as tenancy
from app.tenancy.repository import TenantRow
from billing import figures, usage

# Period -> how many UTC days it covers, today included.
PERIODS = {"today": 1, "7d": 7, "30d": 30}
# What the overview calls each ledger kind's Tokens.
TOKEN_LABELS = {
    "recharge": "recharged",
    "grant": "granted",
    "capture": "consumed",
    "release": "released",
    "refund": "refunded",
    "expire": "expired",
}
JOB_STATUSES = ("succeeded", "failed", "canceled")
HOURS_SHOWN = 24
FLAGS_COUNTED = 1000  # open flags shown up to this; more shows as "1,000+"


@dataclass(frozen=True)
class DayTokens:
    day: date
    tokens: dict[str, int]  # TOKEN_LABELS' names -> Tokens of that day


@dataclass
class Overview:
    tenant: TenantRow
    period: str
    first: date
    last: date
    tokens: dict[str, int]  # TOKEN_LABELS' names -> Tokens over the period
    held_now: int
    active_users: int
    jobs: dict[tuple[str, str], int]  # (kind, status) -> jobs that ended so in the period
    run_times: list[stats.RunTimes]
    open_jobs: list[stats.OpenJobs]
    live_workers: int
    days: list[DayTokens]
    hours: list[stats.HourCount]
    hours_since: datetime
    open_flags: int = 0  # up to FLAGS_COUNTED + 1 (more than FLAGS_COUNTED)
    kinds: list[str] = field(default_factory=list)

    @property
    def success_rate(self) -> float | None:
        """Succeeded over succeeded and failed (canceled jobs not counted); None: no job."""
        ok = sum(n for (_, status), n in self.jobs.items() if status == "succeeded")
        failed = sum(n for (_, status), n in self.jobs.items() if status == "failed")
        return ok / (ok + failed) if ok + failed else None

    @property
    def queue_depth(self) -> int:
        return sum(row.queued for row in self.open_jobs)

    @property
    def processing(self) -> int:
        return sum(row.processing for row in self.open_jobs)

    @property
    def oldest_queued_s(self) -> float:
        return max((row.oldest_queued_s for row in self.open_jobs), default=0.0)


def period_days(period: str, today: date) -> tuple[date, date]:
    if period not in PERIODS:
        raise NotFound("There is no such period")
    return today - timedelta(days=PERIODS[period] - 1), today


async def tenant_overview(
    session: AsyncSession,
    settings: Settings,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    period: str,
) -> Overview:
    """The overview of a tenant within the admin's reach (404 otherwise)."""
    ensure_tenant_access(admin, tenant_id, write=False)
    now = datetime.now(UTC)
    first, last = period_days(period, now.date())
    tenant = await tenancy.get_tenant(session, tenant_id)
    by_day = await usage.daily(session, tenant_id, first, last)
    days = [
        DayTokens(day, _tokens(by_day.get(day, {})))
        for day in (first + timedelta(days=n) for n in range((last - first).days + 1))
    ]
    jobs: dict[tuple[str, str], int] = {}
    for metrics in by_day.values():
        for metric, total in metrics.items():
            if metric.startswith("job:"):
                _, kind, status = metric.split(":", 2)
                jobs[(kind, status)] = jobs.get((kind, status), 0) + total.count
    hours_since = (now - timedelta(hours=HOURS_SHOWN - 1)).replace(
        minute=0, second=0, microsecond=0
    )
    within = max(15.0, 3 * settings.jobs_housekeeping_seconds)
    return Overview(
        tenant=tenant,
        period=period,
        first=first,
        last=last,
        tokens={name: sum(d.tokens[name] for d in days) for name in TOKEN_LABELS.values()},
        held_now=await figures.held_now(session, tenant_id),
        active_users=await figures.active_users_since(session, tenant_id, first),
        jobs=jobs,
        run_times=await stats.run_times(
            session, tenant_id, datetime.combine(first, datetime.min.time(), UTC)
        ),
        open_jobs=await stats.open_jobs(session, tenant_id),
        live_workers=await queue.live_workers(session, within_s=within),
        days=days,
        hours=await stats.jobs_per_hour(session, tenant_id, hours_since),
        hours_since=hours_since,
        open_flags=await anomaly.open_flag_count(session, tenant_id, cap=FLAGS_COUNTED + 1),
        kinds=sorted({kind for kind, _ in jobs} | {"image", "video"}),
    )


def _tokens(metrics: dict[str, usage.Total]) -> dict[str, int]:
    return {
        label: metrics[f"ledger:{kind}"].tokens if f"ledger:{kind}" in metrics else 0
        for kind, label in TOKEN_LABELS.items()
    }
