"""Log set-up for every ``swapmeter`` command: text lines for people, or JSON lines for a
log pipeline (``SWAPMETER_LOG_FORMAT=json``) carrying the request id, tenant and job id
of the work that logged them.

Those three live in context variables: the HTTP middleware sets the request id, the API-key
and admin dependencies the tenant, the job runner the job id and tenant. asyncio tasks
and ``asyncio.to_thread`` copy the context, so a log line from a job's thread carries the
job's ids too.
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
import os
from datetime import UTC, datetime
from typing import Any

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "swapmeter_request_id", default=None
)
tenant_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "swapmeter_tenant_id", default=None
)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "swapmeter_job_id", default=None
)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTEXT = (("request_id", request_id), ("tenant_id", tenant_id), ("job_id", job_id))


def log_format() -> str:
    """``text`` (the default) or ``json``; anything else is refused with a clear message."""
    fmt = os.environ.get("SWAPMETER_LOG_FORMAT", "text").strip().lower() or "text"
    if fmt not in ("text", "json"):
        raise SystemExit(f"swapmeter: SWAPMETER_LOG_FORMAT must be text or json, not {fmt!r}")
    return fmt


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the ids of
    the request or job being served where known, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in _CONTEXT:
            value = var.get()
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


def json_dict_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` writing JSON lines from the root logger and
    uvicorn's own loggers (which uvicorn applies again in each of its worker processes)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    own = {"handlers": ["main"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"main": handler},
        "loggers": {"uvicorn": own, "uvicorn.access": own, "uvicorn.error": {"level": level}},
        "root": {"handlers": ["main"], "level": level},
    }


def configure() -> None:
    """Configure this process's logging from the environment."""
    level = os.environ.get("SWAPMETER_LOG_LEVEL", "INFO")
    if log_format() == "json":
        logging.config.dictConfig(json_dict_config(level.upper()))
    else:
        logging.basicConfig(level=level, format=TEXT_FORMAT)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def uvicorn_log_config() -> dict[str, Any] | None:
    """For JSON logs, the dictConfig uvicorn applies in each of its processes (its access
    and error logs in JSON too); None for text logs (uvicorn keeps its own format)."""
    if log_format() != "json":
        return None
    return json_dict_config(os.environ.get("SWAPMETER_LOG_LEVEL", "INFO").upper())
