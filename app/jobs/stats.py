"""A tenant's jobs in figures, for the operators' overview: every read bounded by an index.

- Open jobs (queued, processing, the oldest one's wait): the partial index ``ix_jobs_open``
  holds only open jobs, whatever the table keeps.
- Jobs per hour and run times: ``ix_jobs_tenant_id_created_at`` (tenant_id, created_at,
  id), migration 0017, read as one range of one tenant's recent jobs; run times over the
  latest ``RUN_TIME_SAMPLE`` finished jobs of the range at most.

Jobs by kind and status over days come from the usage rollups instead (billing.usage).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

RUN_TIME_SAMPLE = 5000


@dataclass(frozen=True)
class OpenJobs:
    kind: str
    queued: int
    processing: int
    oldest_queued_s: float  # 0 when none waits


@dataclass(frozen=True)
class RunTimes:
    kind: str
    jobs: int  # how many finished jobs the percentiles cover
    p50_s: float
    p95_s: float


@dataclass(frozen=True)
class HourCount:
    hour: datetime  # the hour's start, UTC
    status: str
    jobs: int


async def open_jobs(session: AsyncSession, tenant_id: uuid.UUID) -> list[OpenJobs]:
    rows = await session.execute(
        text(
            """
            SELECT kind,
                   count(*) FILTER (WHERE status = 'queued') AS queued,
                   count(*) FILTER (WHERE status = 'processing') AS processing,
                   coalesce(extract(epoch FROM now() - min(coalesce(run_after, created_at))
                                    FILTER (WHERE status = 'queued'
                                            AND (run_after IS NULL OR run_after <= now()))),
                            0) AS oldest_queued_s
            FROM jobs
            WHERE status IN ('queued', 'processing') AND tenant_id = :tenant_id
            GROUP BY kind ORDER BY kind
            """
        ),
        {"tenant_id": tenant_id},
    )
    return [OpenJobs(r.kind, r.queued, r.processing, float(r.oldest_queued_s)) for r in rows]


async def run_times(session: AsyncSession, tenant_id: uuid.UUID, since: datetime) -> list[RunTimes]:
    """p50 and p95 of the run time (start to finish) of the jobs that succeeded, created
    since ``since``: the latest ``RUN_TIME_SAMPLE`` of them at most, per kind."""
    rows = await session.execute(
        text(
            """
            SELECT kind, count(*) AS jobs,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY run_s) AS p50,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY run_s) AS p95
            FROM (
                SELECT kind, extract(epoch FROM finished_at - started_at) AS run_s
                FROM jobs
                WHERE tenant_id = :tenant_id AND created_at >= :since
                  AND status = 'succeeded' AND started_at IS NOT NULL
                ORDER BY created_at DESC
                LIMIT :sample
            ) recent
            GROUP BY kind ORDER BY kind
            """
        ),
        {"tenant_id": tenant_id, "since": since, "sample": RUN_TIME_SAMPLE},
    )
    return [RunTimes(r.kind, r.jobs, float(r.p50), float(r.p95)) for r in rows]


async def jobs_per_hour(
    session: AsyncSession, tenant_id: uuid.UUID, since: datetime
) -> list[HourCount]:
    """The jobs created each hour since ``since``, by their status now."""
    rows = await session.execute(
        text(
            """
            SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC') AS hour, status,
                   count(*) AS jobs
            FROM jobs
            WHERE tenant_id = :tenant_id AND created_at >= :since
            GROUP BY 1, 2 ORDER BY 1, 2
            """
        ),
        {"tenant_id": tenant_id, "since": since},
    )
    return [HourCount(r.hour, r.status, r.jobs) for r in rows]
