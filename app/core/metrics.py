"""Prometheus metrics of the HTTP layer, and the ``/metrics`` exposition.

Domains define their own metrics next to their code (billing/metrics.py, ...); they all
register in the default registry and show up here. Labels are bounded: route templates,
never raw paths or ids.

Several API processes behind one port (``swapmeter api --workers N``) run in the client
library's multiprocess mode: the CLI points ``PROMETHEUS_MULTIPROC_DIR`` at an empty folder
before uvicorn starts its workers, every process writes its samples there, and a scrape of
any one of them adds up all of them. Counters and histograms are summed; each gauge says
how to combine (``multiprocess_mode``): ``livesum`` for a process's own count, ``mostrecent``
for the cluster-wide values a scrape refreshes from the database, so they are not counted
once per process.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Methods outside this set (any token is a valid method) are counted as "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "swapmeter_http_requests_total",
    "HTTP requests by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "swapmeter_http_request_duration_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HTTP_ERRORS = Counter(
    "swapmeter_http_errors_total",
    "Error answers by contract error code (InsufficientBalance is a 402, RateLimited a "
    "429, ...): a closed set of codes.",
    ["code"],
)
HTTP_ERRORS.labels("InsufficientBalance")  # exported at 0 from the start: the 402 panel
DATABASE_UP = Gauge(
    "swapmeter_database_up",
    "1 when PostgreSQL answered this process's last cluster-gauge refresh (a scrape of "
    "/metrics, a worker's housekeeping), 0 when it did not.",
    multiprocess_mode="mostrecent",
)


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    method = method if method in _METHODS else "other"
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_LATENCY.labels(method, route).observe(seconds)


def count_error(code: str) -> None:
    HTTP_ERRORS.labels(code).inc()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> tuple[bytes, str]:
    """The text format of every metric: this process's, or in multiprocess mode all the
    processes' that share the folder."""
    folder = multiprocess_dir()
    if folder is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def process_exiting() -> None:
    """An API process ends: its ``live*`` gauges (jobs it was running) stop counting."""
    folder = multiprocess_dir()
    if folder is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), folder)
