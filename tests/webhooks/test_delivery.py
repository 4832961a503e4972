"""Webhook signing and delivery against a local receiver in a thread.

The receiver answers a scripted list of statuses and records what it got, so a test can
check both what the customer saw and what deliver() reported.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from app.webhooks.delivery import deliver
from app.webhooks.signing import SIGNATURE_HEADER, sign, verify

SECRET = b"whsec_test_0123456789"
JOB = {"id": "job_1", "status": "succeeded", "tokens_charged": 1, "result": {"faces": 1}}


@dataclass
class Receiver:
    port: int
    script: list[tuple[int, dict[str, str], float]] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/swapmeter"

    @property
    def allow(self) -> frozenset[str]:
        return frozenset({f"127.0.0.1:{self.port}"})

    def answer(self, *statuses: int, headers: dict[str, str] | None = None) -> None:
        self.script[:] = [(s, headers or {}, 0.0) for s in statuses]


def _handler(receiver: Receiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                receiver.received.append((dict(self.headers.items()), body))
                status, headers, delay = (
                    receiver.script.pop(0) if receiver.script else (200, {}, 0.0)
                )
            time.sleep(delay)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    rec = Receiver(port=server.server_address[1])
    server.RequestHandlerClass = _handler(rec)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield rec
    server.shutdown()
    server.server_close()


def test_signature_verifies_for_the_signed_body_only() -> None:
    body = orjson.dumps(JOB)
    header = sign(SECRET, body, t=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(SECRET, header, body, now=1_700_000_100)
    assert not verify(b"other-secret", header, body, now=1_700_000_100)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_100)
    assert not verify(SECRET, header.replace("t=1700000000", "t=1700000001"), body, now=1.7e9)


def test_signature_is_the_documented_hmac_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"id":"job_1"}'
    expected = hmac.new(SECRET, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body, 1_700_000_000) == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize("age_s", [-301, 301, 10_000])
def test_signature_outside_the_tolerance_is_refused(age_s: int) -> None:
    body = orjson.dumps(JOB)
    header = sign(SECRET, body, t=1_700_000_000)
    assert not verify(SECRET, header, body, tolerance_s=300, now=1_700_000_000 + age_s)


@pytest.mark.parametrize(
    "header",
    [
        "", "v1=abc", "t=abc,v1=abc", "t=1700000000", "garbage", "t=1700000000,v1=é",
        f"t={'9' * 400},v1=00", "t=١٧٠٠٠٠٠٠٠٠,v1=00",
    ],
)  # fmt: skip
def test_malformed_signature_headers_are_refused(header: str) -> None:
    assert not verify(SECRET, header, b"{}", now=1_700_000_000)


def test_a_timestamp_too_large_for_the_clock_is_refused_not_raised() -> None:
    assert not verify(SECRET, f"t={'9' * 400},v1=00", b"{}")  # against time.time(), a float


def test_any_of_several_signatures_may_match_during_secret_rotation() -> None:
    body = b"{}"
    new = sign(SECRET, body, 1_700_000_000)
    old = sign(b"old-secret", body, 1_700_000_000)
    both = f"{old},{new.partition(',')[2]}"
    assert verify(SECRET, both, body, now=1_700_000_000)


async def test_delivery_posts_compact_json_that_the_receiver_can_verify(
    receiver: Receiver,
) -> None:
    result = await deliver(receiver.url, JOB, SECRET, allow_hosts=receiver.allow)
    assert result.delivered
    [(headers, body)] = receiver.received
    assert body == orjson.dumps(JOB)
    assert b" " not in body
    assert headers["Content-Type"] == "application/json"
    assert verify(SECRET, headers[SIGNATURE_HEADER], body)
    assert [a.status for a in result.attempts] == [200]


async def test_delivery_retries_5xx_and_429_until_success(receiver: Receiver) -> None:
    receiver.answer(500, 503, 429, 204)
    result = await deliver(
        receiver.url, JOB, SECRET, backoff_base_s=0.01, allow_hosts=receiver.allow
    )
    assert result.delivered
    assert [a.status for a in result.attempts] == [500, 503, 429, 204]
    delivery_ids = {h["X-SwapMeter-Delivery"] for h, _ in receiver.received}
    assert delivery_ids == {result.delivery_id}  # receivers can de-duplicate retries
    assert all(verify(SECRET, h[SIGNATURE_HEADER], b) for h, b in receiver.received)


async def test_delivery_gives_up_after_the_configured_attempts(receiver: Receiver) -> None:
    receiver.answer(*([502] * 10))
    result = await deliver(
        receiver.url, JOB, SECRET, attempts=3, backoff_base_s=0.01, allow_hosts=receiver.allow
    )
    assert not result.delivered
    assert [a.status for a in result.attempts] == [502, 502, 502]
    assert len(receiver.received) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 410, 301])
async def test_delivery_is_not_retried_on_client_errors_or_redirects(
    status: int, receiver: Receiver
) -> None:
    receiver.answer(status, 200)
    result = await deliver(
        receiver.url, JOB, SECRET, backoff_base_s=0.01, allow_hosts=receiver.allow
    )
    assert not result.delivered
    assert [a.status for a in result.attempts] == [status]
    assert len(receiver.received) == 1


async def test_429_retry_after_is_waited_before_the_next_attempt(receiver: Receiver) -> None:
    receiver.answer(429, headers={"Retry-After": "1"})
    started = time.monotonic()
    result = await deliver(
        receiver.url, JOB, SECRET, backoff_base_s=0.01, allow_hosts=receiver.allow
    )
    assert result.delivered
    assert time.monotonic() - started >= 1.0


async def test_a_retry_after_that_is_not_ascii_seconds_is_ignored_not_fatal(
    receiver: Receiver,
) -> None:
    """ "²" passes str.isdigit; the try must still be recorded and retried (it used to
    escape, leaving the delivery pending to be resent by the sweep forever)."""
    receiver.answer(503, 200, headers={"Retry-After": "²"})
    result = await deliver(
        receiver.url, JOB, SECRET, backoff_base_s=0.01, allow_hosts=receiver.allow
    )
    assert result.delivered
    assert [a.status for a in result.attempts] == [503, 200]


async def test_no_retry_starts_that_could_not_end_within_the_time_given(
    receiver: Receiver,
) -> None:
    """The worker's lease on a delivery is its time budget: a receiver asking to be
    retried later than that is given up on, rather than sent twice (once by the sweep)."""
    receiver.answer(503, 503, headers={"Retry-After": "2"})
    started = time.monotonic()
    result = await deliver(
        receiver.url, JOB, SECRET, backoff_base_s=0.01, allow_hosts=receiver.allow,
        timeout_s=1.0, give_up_after_s=2.5,
    )  # fmt: skip
    assert not result.delivered
    assert [a.status for a in result.attempts] == [503]
    assert time.monotonic() - started < 2.0


async def test_every_try_and_every_resend_of_one_event_carries_its_delivery_id(
    receiver: Receiver,
) -> None:
    receiver.answer(500, 200, 200)
    for _ in range(2):  # the first delivery (one retry), then a resend of the same event
        result = await deliver(
            receiver.url, JOB, SECRET, backoff_base_s=0.01, allow_hosts=receiver.allow,
            delivery_id="0b6c8f5e-3b1d-5a6e-9c2f-1d4e7a8b9c0d",
        )  # fmt: skip
        assert result.delivered
    ids = {headers["X-SwapMeter-Delivery"] for headers, _ in receiver.received}
    assert len(receiver.received) == 3 and ids == {"0b6c8f5e-3b1d-5a6e-9c2f-1d4e7a8b9c0d"}


async def test_unreachable_receiver_is_retried_and_reported_without_a_status() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await deliver(
        f"http://127.0.0.1:{port}/",
        JOB,
        SECRET,
        attempts=3,
        backoff_base_s=0.01,
        allow_hosts=frozenset({f"127.0.0.1:{port}"}),
    )
    assert not result.delivered
    assert len(result.attempts) == 3
    assert all(a.status is None and a.error for a in result.attempts)


async def test_slow_receiver_times_out_and_the_delivery_is_retried(receiver: Receiver) -> None:
    receiver.script[:] = [(200, {}, 1.0), (200, {}, 0.0)]
    result = await deliver(
        receiver.url,
        JOB,
        SECRET,
        timeout_s=0.3,
        backoff_base_s=0.01,
        allow_hosts=receiver.allow,
    )
    assert result.delivered
    first, second = result.attempts
    assert first.status is None and first.error and first.error.startswith("Timeout")
    assert second.status == 200


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "ftp://example.com/hook",
    ],
)
async def test_private_or_non_http_webhook_targets_are_refused_without_retry(
    url: str, receiver: Receiver
) -> None:
    # A transport that sends nothing anywhere: were vetting broken, the test fails here
    # instead of sending packets to private or metadata ranges.
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as client:
        result = await deliver(
            url.format(port=receiver.port), JOB, SECRET, backoff_base_s=0.01, client=client
        )
    assert sent == []
    assert not result.delivered
    [attempt] = result.attempts
    assert attempt.status is None
    assert attempt.error and attempt.error.startswith("UrlNotAllowed")
    assert receiver.received == []


async def test_delivery_result_serialises_for_the_deliveries_log(receiver: Receiver) -> None:
    result = await deliver(receiver.url, JOB, SECRET, allow_hosts=receiver.allow)
    logged = orjson.loads(orjson.dumps(result.as_dict()))
    assert logged["delivered"] is True
    assert logged["attempts"][0]["status"] == 200
    assert logged["attempts"][0]["at"].endswith("+00:00")
