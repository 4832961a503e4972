"""A real ``swapmeter api`` (uvicorn in a subprocess, on a free port) on the test database,
and the CLI run in-process against it with its own config folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from admin.cli import build_app
from app.core.settings import REPO_ROOT, Settings
from tests.admin.helpers import ROOT_EMAIL, ROOT_PASSWORD
from tests.conftest import TEST_JWT_SECRET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "SWAPMETER_ENVIRONMENT": "test",
        "SWAPMETER_DATABASE_URL": settings.database_url,
        "SWAPMETER_REDIS_URL": settings.redis_url,
        "SWAPMETER_JWT_SECRET": TEST_JWT_SECRET,
        "SWAPMETER_BOOTSTRAP_ADMIN_EMAIL": ROOT_EMAIL,
        "SWAPMETER_BOOTSTRAP_ADMIN_PASSWORD": ROOT_PASSWORD,
        "SWAPMETER_MODELS_DIR": str(settings.models_dir),
        "SWAPMETER_DATA_DIR": str(settings.data_dir),
        "SWAPMETER_LOG_LEVEL": "WARNING",
    }


@pytest.fixture(scope="module")
def live_url(settings: Settings) -> Iterator[str]:
    """The API served as ``swapmeter api`` serves it, on a real socket."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=REPO_ROOT, env=server_env(settings))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"the server exited with {server.returncode}"
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready in 60 s"
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return orjson.loads(self.stdout)


@pytest.fixture
def cli(live_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``cli("recharge", ...)``: the command run in-process, config in a fresh folder."""
    monkeypatch.setenv("SWAPMETER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SWAPMETER_URL", live_url)
    monkeypatch.delenv("SWAPMETER_ADMIN_TOKEN", raising=False)
    runner = CliRunner()
    app = build_app()

    def invoke(*args: str, input: str | None = None) -> Result:
        outcome = runner.invoke(app, list(args), input=input, catch_exceptions=False)
        return Result(outcome.exit_code, outcome.stdout, outcome.stderr)

    yield invoke


@pytest.fixture
def logged_in(cli: Any) -> Any:
    result = cli("login", "--email", ROOT_EMAIL, "--password-stdin", input=ROOT_PASSWORD + "\n")
    assert result.exit_code == 0, result.stderr
    return cli
