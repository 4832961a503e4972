"""The HTTP client of the CLI: one ``httpx.Client`` per command, errors turned into one line.

Refused or expired tokens (401) become ``login expired: run swapmeter admin login``; an
unreachable service names its host:port and the reason; any other error shows the
service's error code and message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from admin.cli.errors import EXIT_UNREACHABLE, LOGIN_EXPIRED, CliError

API = "/api/v1"
# A 10,000-entry batch is one transaction on the server: give it time on a busy machine.
TIMEOUT = httpx.Timeout(300.0, connect=10.0)


class Response:
    """What a call answered: status, parsed JSON body, and whether it was a replay."""

    def __init__(self, raw: httpx.Response) -> None:
        self.status = raw.status_code
        self.data: Any = orjson.loads(raw.content) if raw.content else None
        self.replayed = raw.headers.get("Idempotent-Replayed") == "true"


class Client:
    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        headers = {"User-Agent": "swapmeter-admin-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        key: str | None = None,
        login: bool = False,
    ) -> Response:
        """One API call (``path`` under /api/v1); CliError for anything but a 2xx."""
        headers = {}
        content = None
        if body is not None:
            content = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers["Idempotency-Key"] = key
        try:
            raw = self._http.request(
                method, API + path, content=content, params=params, headers=headers
            )
        except httpx.TransportError as exc:
            raise CliError(unreachable(self.url, exc), EXIT_UNREACHABLE) from None
        _refuse_errors(raw, login=login)
        try:
            return Response(raw)
        except orjson.JSONDecodeError:
            raise CliError(
                f"{self.url} answered {raw.status_code} with a body that is not JSON"
            ) from None

    def text(self, path: str, *, params: dict[str, Any], accept: str) -> str:
        """A GET answered in another type than JSON (``accept``), as text."""
        try:
            raw = self._http.get(API + path, params=params, headers={"Accept": accept})
        except httpx.TransportError as exc:
            raise CliError(unreachable(self.url, exc), EXIT_UNREACHABLE) from None
        _refuse_errors(raw)
        return raw.text

    def download(
        self,
        path: str,
        *,
        params: dict[str, Any],
        out: Path,
        progress: Callable[[bytes], None],
    ) -> int:
        """Stream a GET's body into ``out`` (written beside it, renamed when complete, so
        that an interrupted download never looks finished); ``progress`` sees each piece.
        Returns the bytes written."""
        partial = out.with_name(out.name + ".part")
        written = 0
        try:
            with self._http.stream("GET", API + path, params=params) as raw:
                if raw.status_code >= 400:
                    raw.read()
                    _refuse_errors(raw)
                with partial.open("wb") as f:
                    for piece in raw.iter_bytes():
                        f.write(piece)
                        written += len(piece)
                        progress(piece)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise CliError(unreachable(self.url, exc), EXIT_UNREACHABLE) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(out)
        return written


def _refuse_errors(raw: httpx.Response, *, login: bool = False) -> None:
    if raw.status_code == 401 and not login:
        raise CliError(LOGIN_EXPIRED)
    if raw.status_code >= 400:
        raise CliError(http_error(raw))


def unreachable(url: str, exc: Exception) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        reason = f"no answer in time ({type(exc).__name__})"
    return f"cannot reach {parts.hostname}:{port}: {reason}"


def http_error(raw: httpx.Response) -> str:
    """``HTTP 409 IdempotencyKeyReused: message`` from the service's error body."""
    code, message = None, None
    try:
        error = orjson.loads(raw.content).get("error") or {}
        code, message = error.get("code"), error.get("message")
    except (orjson.JSONDecodeError, AttributeError):
        pass
    if message is None:
        message = raw.text.strip().splitlines()[0][:200] if raw.text.strip() else raw.reason_phrase
    return f"HTTP {raw.status_code} {code or raw.reason_phrase}: {message}"
