"""Where the CLI finds the service and its admin token.

The URL: ``--url``, else ``SWAPMETER_URL``, else the one stored by ``login``, else
http://127.0.0.1:8000. The token: ``SWAPMETER_ADMIN_TOKEN``, else the one ``login``
stored for that URL in ``admin.json`` (mode 0600) under ``$SWAPMETER_CONFIG_DIR`` or
``~/.config/swapmeter``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from admin.cli.errors import LOGIN_EXPIRED, CliError

DEFAULT_URL = "http://127.0.0.1:8000"


def config_path() -> Path:
    folder = os.environ.get("SWAPMETER_CONFIG_DIR")
    base = Path(folder) if folder else Path.home() / ".config" / "swapmeter"
    return base / "admin.json"


def load() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}; run swapmeter admin login") from None
    return data if isinstance(data, dict) else {}


def save(data: dict[str, Any]) -> Path:
    """Write the file readable by its owner only (it holds a bearer token)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_suffix(".json.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.chmod(partial, 0o600)  # also when the file existed with wider rights
    partial.replace(path)
    return path


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def resolve_url(option: str | None) -> str:
    return normalise_url(
        option or os.environ.get("SWAPMETER_URL") or load().get("url") or DEFAULT_URL
    )


@dataclass(frozen=True)
class Target:
    url: str
    token: str


def resolve(option_url: str | None) -> Target:
    """The service and the token to send it; CliError when there is no usable token."""
    url = resolve_url(option_url)
    token = os.environ.get("SWAPMETER_ADMIN_TOKEN")
    if token:
        return Target(url, token)
    stored = load()
    if not stored.get("token"):
        raise CliError(f"not logged in to {url}: run swapmeter admin login")
    if normalise_url(str(stored.get("url", ""))) != url:
        raise CliError(
            f"the stored login is for {stored.get('url')}, not {url}: run swapmeter admin login"
        )
    expires_at = stored.get("expires_at")
    if isinstance(expires_at, (int, float)) and expires_at <= time.time():
        raise CliError(LOGIN_EXPIRED)
    return Target(url, str(stored["token"]))
