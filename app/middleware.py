"""Pure-ASGI middleware: request ids, HTTP metrics, and a last-resort 500 in the contract shape.

Written as raw ASGI (not BaseHTTPMiddleware) so it adds no task hop per request and still
wraps exceptions that escape the routers.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import logs, metrics
from app.errors import InternalError

log = logging.getLogger("swapmeter.http")
# Echoed as given (the contract): any printable ASCII up to 128 characters (what jobs and
# the audit log store). Only an id that could forge log lines (control or non-ASCII
# characters) or a longer one is replaced by a fresh one.
_VALID_REQUEST_ID = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?$")


_SIGNATURE = re.compile(r"([?&]sig=)[^&\s]*")


class HideSignatures(logging.Filter):
    """Keeps result-link signatures out of the access log: a signed link serves its file
    to anyone who has it, without an API key, until it expires (24 h), so whoever reads
    the log must not get them. Installed on uvicorn's access logger by ``create_app``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SIGNATURE.sub(r"\1[hidden]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def hide_signatures_in_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, HideSignatures) for f in access.filters):
        access.addFilter(HideSignatures())


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        given = _header(scope, b"x-request-id")
        request_id = given if given and _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        context = logs.request_id.set(request_id)
        rid_header = (b"x-request-id", request_id.encode())
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if response_started:
                raise
            status = 500
            metrics.count_error(InternalError.code)
            body = orjson.dumps(
                {
                    "error": {
                        "code": InternalError.code,
                        "message": "Internal server error",
                        "request_id": request_id,
                    }
                }
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"), rid_header],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.observe_http(scope["method"], template, status, time.perf_counter() - started)
            logs.request_id.reset(context)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def client_ip(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return client[0] if client else ""
