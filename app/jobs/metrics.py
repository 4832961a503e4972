"""Prometheus metrics of swap jobs. Labels are bounded: kind, final status, stage.

Token movements are not counted here: billing counts every hold, capture and release
after its transaction commits (``swapmeter_tokens_moved_total{kind=...}``).

Gauges fed from the database (queue length, live workers) hold the same cluster-wide
value in every worker process: aggregate them with ``max``, not ``sum`` (and between the
API processes of one ``swapmeter api --workers N``, the most recent refresh is the one
served: ``multiprocess_mode="mostrecent"``). ``swapmeter_jobs_running`` is this process's
own count: aggregate it with ``sum``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from app.core.errors import INFERENCE_STATUS

KINDS = ("image", "video")
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

JOBS_IN_QUEUE = Gauge(
    "swapmeter_jobs_in_queue",
    "Jobs waiting for a worker, cluster-wide (refreshed by each worker; aggregate with max).",
    ["kind"],
    multiprocess_mode="mostrecent",
)
JOBS_PROCESSING = Gauge(
    "swapmeter_jobs_processing",
    "Jobs leased by some worker, cluster-wide (refreshed by each worker; aggregate with max).",
    ["kind"],
    multiprocess_mode="mostrecent",
)
JOBS_RUNNING = Gauge(
    "swapmeter_jobs_running",
    "Jobs this process is running now (aggregate with sum).",
    ["kind"],
    multiprocess_mode="livesum",
)
QUEUE_WAIT = Histogram(
    "swapmeter_job_queue_wait_seconds",
    "From job creation to a worker claiming it (a retried job counts from creation).",
    ["kind"],
    buckets=_WAIT_BUCKETS,
)
RUN_TIME = Histogram(
    "swapmeter_job_run_seconds",
    "From a worker claiming a job to its final status, by kind and status.",
    ["kind", "status"],
    buckets=_RUN_BUCKETS,
)
JOBS_FINISHED = Counter(
    "swapmeter_jobs_finished_total",
    "Jobs that reached a final status, by kind, status and error code (bounded set).",
    ["kind", "status", "code"],
)
INFERENCE_STAGE = Histogram(
    "swapmeter_inference_stage_seconds",
    "Engine time per stage of one job (decode, detect, swap, blend, enhance, encode; "
    "video: probe, process).",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
TOKENS_HELD = Gauge(
    "swapmeter_jobs_tokens_held",
    "Tokens held by jobs not finished yet (queued or processing), cluster-wide: what "
    "customers cannot spend until their jobs end (aggregate with max).",
    ["kind"],
    multiprocess_mode="mostrecent",
)
OLDEST_QUEUED = Gauge(
    "swapmeter_jobs_oldest_queued_seconds",
    "How long the oldest job a worker could take has waited, cluster-wide (jobs held "
    "back by their tenant's cap not counted); 0 when none waits (alert on it: no worker "
    "is taking jobs; aggregate with max).",
    ["kind"],
    multiprocess_mode="mostrecent",
)
PRICING_QUEUE_DEPTH = Gauge(
    "swapmeter_pricing_queue_depth",
    "The queue depth this process last priced a swap or a quote with (load pricing; "
    "counted at most once a second, only for tenants whose price book has a peak).",
    multiprocess_mode="mostrecent",
)
PRICE_MULTIPLIER = Gauge(
    "swapmeter_price_multiplier",
    "The peak multiplier in force for a tenant when it last priced a swap or a quote "
    "(1: under its threshold); only tenants whose price book has a peak.",
    ["tenant"],
    multiprocess_mode="mostrecent",
)
WORKERS_LIVE = Gauge(
    "swapmeter_workers_live",
    "Worker processes whose heartbeat is recent (from the workers table; aggregate with max).",
    multiprocess_mode="mostrecent",
)
HOLDS_STALE = Gauge(
    "swapmeter_holds_open_stale",
    "Token holds still open, older than the job lease, whose job is no longer queued or "
    "running (or that have none): Tokens reserved that nobody will settle (cluster-wide; "
    "aggregate with max).",
    multiprocess_mode="mostrecent",
)
WEBHOOKS = Counter(
    "swapmeter_webhook_deliveries_total",
    "Webhook deliveries by outcome (delivered, failed).",
    ["outcome"],
)

for _outcome in ("delivered", "failed"):  # exported at 0 from the start
    WEBHOOKS.labels(_outcome)

# Error codes are a closed set of contract codes (the engine's, in app.core.errors.
# INFERENCE_STATUS, and ours); anything else is counted as "other".
_KNOWN_CODES = frozenset(
    {"", "Canceled", "WorkerLost", "InternalError", "InferenceFailed", *INFERENCE_STATUS}
)


def job_finished(kind: str, status: str, code: str | None, run_s: float | None) -> None:
    label = code or ""
    JOBS_FINISHED.labels(kind, status, label if label in _KNOWN_CODES else "other").inc()
    if run_s is not None:
        RUN_TIME.labels(kind, status).observe(max(0.0, run_s))


def stage_timings(timings: dict[str, float]) -> None:
    for stage, seconds in timings.items():
        if seconds > 0 and stage in _STAGES:
            INFERENCE_STAGE.labels(stage).observe(seconds)


_STAGES = frozenset(
    {"decode", "detect", "swap", "blend", "enhance", "encode", "label", "probe", "process"}
)
