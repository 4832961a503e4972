"""Who may read a worker's /metrics: the address it listens on, and the bearer token."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from app.core.metrics import serve_metrics
from app.core.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def outward_address() -> str:
    """This machine's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
        return str(s.getsockname()[0])


def test_a_worker_serves_its_metrics_on_loopback_unless_told_otherwise() -> None:
    settings = Settings(_env_file=None)
    assert settings.jobs_worker_metrics_host == "127.0.0.1"
    address = outward_address()
    if address.startswith("127."):
        pytest.skip("this machine has no address but loopback")
    port = free_port()
    server = serve_metrics(settings.jobs_worker_metrics_host, port)
    try:
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200
        with pytest.raises(OSError):  # refused: nothing listens there
            socket.create_connection((address, port), timeout=2).close()
    finally:
        server.shutdown()
        server.server_close()
    port = free_port()
    server = serve_metrics("0.0.0.0", port)  # as the Helm chart sets it
    try:
        status, body = get(f"http://{address}:{port}/metrics")
        assert status == 200 and "python_info" in body
    finally:
        server.shutdown()
        server.server_close()


def test_with_a_token_a_workers_metrics_need_it() -> None:
    port = free_port()
    server = serve_metrics("127.0.0.1", port, token="worker-scrape-456")
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        for token in (None, "wrong", ""):
            status, body = get(url, token)
            assert status == 401, token
            assert '"code":"Unauthorized"' in body and "python_info" not in body
        status, body = get(url, "worker-scrape-456")
        assert status == 200 and "python_info" in body
    finally:
        server.shutdown()
        server.server_close()
