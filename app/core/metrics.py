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

import hmac
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

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


def bearer_ok(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (``SWAPMETER_METRICS_TOKEN``);
    always true when no token is configured. Compared in constant time."""
    if not token:
        return True
    return hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode())


_UNAUTHORIZED_BODY = (
    b'{"error":{"code":"Unauthorized","message":"/metrics needs '
    b'Authorization: Bearer <SWAPMETER_METRICS_TOKEN>"}}'
)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _guarded(app: WsgiApp, token: str) -> WsgiApp:
    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if bearer_ok(environ.get("HTTP_AUTHORIZATION"), token):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")],
        )
        return [_UNAUTHORIZED_BODY]

    return guarded


def serve_metrics(host: str, port: int, token: str = "") -> Any:
    """Serve this process's metrics on ``host:port`` from a daemon thread (a worker's
    ``/metrics``); with ``token``, only to requests that carry it as a bearer token.
    Returns the server (``shutdown()`` stops it); raises OSError when the port is taken."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's
            pass  # one line per scrape on stderr is noise

    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
    app = make_wsgi_app()
    server = make_server(
        host, port, _guarded(app, token) if token else app, server_class, QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    return server
