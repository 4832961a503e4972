"""URL inputs: size and time limits, and refusal of internal addresses, also after redirects.

The only server really reached is a local http.server in a thread, allow-listed by
host:port. Every other connection goes through a guard transport that records it and
fails, so a refusal test proves that nothing was sent, and no packet ever leaves for a
private or metadata range even when the code under test is wrong.
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.core import fetch
from app.core.errors import PayloadTooLarge, UrlFetchFailed, UrlNotAllowed
from app.core.fetch import blocked_reason, fetch_url, vet_url

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64  # 16 KiB and a PNG signature


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: list[str]

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        path, _, query = self.path.partition("?")
        if path == "/image.png":
            self._send(200, IMAGE, {"Content-Type": "image/png"})
        elif path == "/redirect":
            self._send(302, b"", {"Location": query.removeprefix("to=")})
        elif path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.write(b"x" * 1024)
        elif path == "/chunked-huge":
            # No Content-Length: only counting the streamed bytes can stop this one.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(64):
                    chunk = b"y" * 16384
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        elif path == "/slow-headers":
            time.sleep(3)
            self._send(200, IMAGE, {})
        elif path == "/trickle":
            # Each byte arrives quickly, but the whole body would take seconds.
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
        else:
            self._send(404, b"not here", {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve() -> tuple[http.server.ThreadingHTTPServer, int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.hits = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture(scope="module")
def origin() -> Iterator[tuple[http.server.ThreadingHTTPServer, int]]:
    server, port = _serve()
    yield server, port
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def other_local() -> Iterator[tuple[http.server.ThreadingHTTPServer, int]]:
    """A second local service that is NOT allow-listed: stands for an internal admin port."""
    server, port = _serve()
    yield server, port
    server.shutdown()
    server.server_close()


class _GuardTransport(httpx.AsyncHTTPTransport):
    """Lets through only connections to allowed local ports; records and fails the rest."""

    def __init__(self, allowed_ports: set[int], attempts: list[httpx.Request]) -> None:
        super().__init__()
        self.allowed_ports = allowed_ports
        self.attempts = attempts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts.append(request)
        if request.url.host == "127.0.0.1" and request.url.port in self.allowed_ports:
            return await super().handle_async_request(request)
        raise httpx.ConnectError("guard: connection refused by the test")


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch, origin: tuple[Any, int]) -> list[httpx.Request]:
    """Every request fetch_url tried to send, in order."""
    sent: list[httpx.Request] = []
    real_make_client = fetch._make_client

    def guarded_client(timeout_s: float) -> httpx.AsyncClient:
        client = real_make_client(timeout_s)
        client._transport = _GuardTransport({origin[1]}, sent)
        return client

    monkeypatch.setattr(fetch, "_make_client", guarded_client)
    return sent


def _allow(port: int) -> frozenset[str]:
    return frozenset({f"127.0.0.1:{port}"})


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> list[str]:
    """Answer lookups from ``answers`` (one list per successive lookup); returns the log."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        queue = answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    monkeypatch.setattr(fetch, "_resolve", resolve)
    return asked


async def test_fetch_returns_the_body_of_an_allow_listed_local_server(
    origin: tuple[Any, int], attempts: list[httpx.Request]
) -> None:
    _, port = origin
    body = await fetch_url(
        f"http://127.0.0.1:{port}/image.png",
        max_bytes=1 << 20,
        timeout_s=5,
        allow_hosts=_allow(port),
    )
    assert body == IMAGE


async def test_local_server_is_refused_when_not_allow_listed(
    origin: tuple[Any, int], attempts: list[httpx.Request]
) -> None:
    _, port = origin
    with pytest.raises(UrlNotAllowed):
        await fetch_url(f"http://127.0.0.1:{port}/image.png", max_bytes=1 << 20, timeout_s=5)
    assert attempts == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/admin",
        "http://localhost/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://224.0.0.1/",
        "http://2130706433/",  # 127.0.0.1 written as one decimal number
        "http://0x7f.1/",
        "https://127.0.0.1/",
        "file:///etc/passwd",
        "ftp://example.com/image.png",
        "gopher://example.com/",
        "http://user:pass@example.com/image.png",
        "not a url",
    ],
)
async def test_internal_addresses_and_other_schemes_are_refused_before_any_connection(
    url: str, attempts: list[httpx.Request]
) -> None:
    with pytest.raises(UrlNotAllowed) as refused:
        await fetch_url(url, max_bytes=1 << 20, timeout_s=5)
    assert attempts == []
    assert refused.value.status == 400


async def test_name_with_any_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, attempts: list[httpx.Request]
) -> None:
    _fake_dns(monkeypatch, {"images.example.com": [["93.184.216.34", "10.1.2.3"]]})
    with pytest.raises(UrlNotAllowed) as refused:
        await fetch_url("https://images.example.com/a.jpg", max_bytes=1 << 20, timeout_s=5)
    assert attempts == []
    assert "10.1.2.3" not in refused.value.message  # internal DNS is not mapped for callers


async def test_connection_goes_to_the_vetted_address_even_if_dns_changes_afterwards(
    monkeypatch: pytest.MonkeyPatch, attempts: list[httpx.Request]
) -> None:
    # DNS rebinding: first answer public, every later one loopback.
    asked = _fake_dns(monkeypatch, {"cdn.example.com": [["93.184.216.34"], ["127.0.0.1"]]})
    with pytest.raises(UrlFetchFailed):  # the guard refuses the (public) connection
        await fetch_url("https://cdn.example.com:8443/a.jpg", max_bytes=1 << 20, timeout_s=5)
    assert asked == ["cdn.example.com"]
    [request] = attempts
    assert request.url.host == "93.184.216.34"
    assert request.url.port == 8443
    assert request.headers["host"] == "cdn.example.com:8443"
    # TLS must verify the certificate for the name, not for the IP we dialled.
    assert request.extensions["sni_hostname"] == "cdn.example.com"


async def test_unresolvable_host_is_a_fetch_failure(
    monkeypatch: pytest.MonkeyPatch, attempts: list[httpx.Request]
) -> None:
    _fake_dns(monkeypatch, {})
    with pytest.raises(UrlFetchFailed) as failed:
        await fetch_url("http://nowhere.example/", max_bytes=1 << 20, timeout_s=5)
    assert attempts == []
    assert "Name or service" not in failed.value.message


async def test_redirect_within_the_allowed_server_is_followed(
    origin: tuple[Any, int], attempts: list[httpx.Request]
) -> None:
    _, port = origin
    body = await fetch_url(
        f"http://127.0.0.1:{port}/redirect?to=/image.png",
        max_bytes=1 << 20,
        timeout_s=5,
        allow_hosts=_allow(port),
    )
    assert body == IMAGE
    assert [r.url.path for r in attempts] == ["/redirect", "/image.png"]


async def test_redirect_to_another_local_port_is_refused(
    origin: tuple[Any, int],
    other_local: tuple[http.server.ThreadingHTTPServer, int],
    attempts: list[httpx.Request],
) -> None:
    _, port = origin
    internal, internal_port = other_local
    internal.hits.clear()  # type: ignore[attr-defined]
    with pytest.raises(UrlNotAllowed):
        await fetch_url(
            f"http://127.0.0.1:{port}/redirect?to=http://127.0.0.1:{internal_port}/image.png",
            max_bytes=1 << 20,
            timeout_s=5,
            allow_hosts=_allow(port),
        )
    assert [r.url.port for r in attempts] == [port]
    assert internal.hits == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data",
        "http://localhost/",
        "file:///etc/passwd",
    ],
)
async def test_redirect_to_metadata_or_loopback_is_refused(
    location: str, origin: tuple[Any, int], attempts: list[httpx.Request]
) -> None:
    _, port = origin
    with pytest.raises(UrlNotAllowed):
        await fetch_url(
            f"http://127.0.0.1:{port}/redirect?to={location}",
            max_bytes=1 << 20,
            timeout_s=5,
            allow_hosts=_allow(port),
        )
    assert [r.url.path for r in attempts] == ["/redirect"]


async def test_redirect_loop_gives_up_after_max_redirects(
    origin: tuple[Any, int], attempts: list[httpx.Request]
) -> None:
    _, port = origin
    with pytest.raises(UrlFetchFailed):
        await fetch_url(
            f"http://127.0.0.1:{port}/loop",
            max_bytes=1 << 20,
            timeout_s=5,
            allow_hosts=_allow(port),
            max_redirects=2,
        )
    assert len(attempts) == 3


async def test_declared_size_over_the_limit_is_refused_up_front(
    origin: tuple[Any, int], attempts: list[httpx.Request]
) -> None:
    _, port = origin
    with pytest.raises(PayloadTooLarge) as refused:
        await fetch_url(
            f"http://127.0.0.1:{port}/declared-huge",
            max_bytes=1 << 20,
            timeout_s=5,
            allow_hosts=_allow(port),
        )
    assert refused.value.status == 413


async def test_streamed_body_over_the_limit_is_refused(
    origin: tuple[Any, int], attempts: list[httpx.Request]
) -> None:
    _, port = origin
    with pytest.raises(PayloadTooLarge):
        await fetch_url(
            f"http://127.0.0.1:{port}/chunked-huge",
            max_bytes=100_000,
            timeout_s=5,
            allow_hosts=_allow(port),
        )


async def test_body_of_exactly_the_limit_is_accepted(
    origin: tuple[Any, int], attempts: list[httpx.Request]
) -> None:
    _, port = origin
    body = await fetch_url(
        f"http://127.0.0.1:{port}/image.png",
        max_bytes=len(IMAGE),
        timeout_s=5,
        allow_hosts=_allow(port),
    )
    assert len(body) == len(IMAGE)


@pytest.mark.parametrize("path", ["/slow-headers", "/trickle"])
async def test_slow_server_times_out_within_the_total_limit(
    path: str, origin: tuple[Any, int], attempts: list[httpx.Request]
) -> None:
    _, port = origin
    started = time.monotonic()
    with pytest.raises(UrlFetchFailed) as failed:
        await fetch_url(
            f"http://127.0.0.1:{port}{path}",
            max_bytes=1 << 20,
            timeout_s=0.5,
            allow_hosts=_allow(port),
        )
    assert time.monotonic() - started < 2.5
    assert "0.5 s" in failed.value.message


async def test_error_status_is_a_fetch_failure_naming_the_status(
    origin: tuple[Any, int], attempts: list[httpx.Request]
) -> None:
    _, port = origin
    with pytest.raises(UrlFetchFailed) as failed:
        await fetch_url(
            f"http://127.0.0.1:{port}/missing",
            max_bytes=1 << 20,
            timeout_s=5,
            allow_hosts=_allow(port),
        )
    assert "404" in failed.value.message


async def test_allow_list_entry_without_port_allows_every_port_of_that_host(
    monkeypatch: pytest.MonkeyPatch, attempts: list[httpx.Request]
) -> None:
    target = await vet_url("http://localhost:1234/x", frozenset({"localhost"}))
    assert target.host_header == "localhost:1234"
    with pytest.raises(UrlNotAllowed):
        await vet_url("http://localhost:1234/x", frozenset({"localhost:80"}))


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.53",
        "10.255.255.255",
        "172.31.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "100.100.100.200",  # Alibaba's metadata service, in CGNAT space
        "224.0.0.251",
        "240.0.0.1",
        "255.255.255.255",
        "0.0.0.0",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",  # site-local: deprecated, still routed on some networks
        "ff02::1",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
    ],
)
def test_internal_addresses_are_blocked(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is not None
