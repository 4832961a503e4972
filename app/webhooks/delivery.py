"""Delivering one webhook: the job JSON POSTed, signed, to the customer's URL, with retries
and backoff. Webhook URLs are customer input, so they go through the same address vetting
and IP pinning as URL inputs (app/fetch.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from app.errors import UrlFetchFailed, UrlNotAllowed
from app.fetch import send_pinned, vet_url
from app.webhooks.signing import SIGNATURE_HEADER, key_bytes, sign

log = logging.getLogger(__name__)

DELIVERY_HEADER = "X-SwapMeter-Delivery"
ATTEMPT_HEADER = "X-SwapMeter-Attempt"
USER_AGENT = "SwapMeter-Webhooks/1"


@dataclass(frozen=True)
class Attempt:
    """One POST: the status we got, or why we got none (error), when and how long."""

    status: int | None
    error: str | None
    at: datetime
    duration_s: float


@dataclass
class DeliveryResult:
    attempts: list[Attempt] = field(default_factory=list)
    delivered: bool = False
    delivery_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the deliveries log the job runner keeps."""
        data = asdict(self)
        for attempt in data["attempts"]:
            attempt["at"] = attempt["at"].isoformat()
        return data


def _retry_after_s(response: httpx.Response) -> float | None:
    """Retry-After in seconds; None for an HTTP date or anything else (``isdigit`` alone
    would pass "²", which ``float`` refuses)."""
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isascii() and value.isdigit() else None


def backoff_s(attempt_index: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with jitter: receivers that recover are not hit in lockstep."""
    ceiling = min(max_s, base_s * (2**attempt_index))
    return random.uniform(ceiling / 2, ceiling)


async def deliver(
    url: str,
    payload: dict[str, Any],
    secret: bytes | str,
    *,
    attempts: int = 5,
    backoff_base_s: float = 1.0,
    timeout_s: float = 10,
    client: httpx.AsyncClient | None = None,
    allow_hosts: frozenset[str] = frozenset(),
    max_backoff_s: float = 300.0,
    delivery_id: str | None = None,
    give_up_after_s: float | None = None,
) -> DeliveryResult:
    """POST ``payload`` as compact JSON, signed, until a 2xx or ``attempts`` tries.

    Retried: network errors, timeouts, 5xx and 429 (waiting at least its Retry-After).
    Not retried: other 4xx and 3xx (redirects are not followed: the customer registered
    this URL), and a URL refused by address vetting. Every try is recorded, never raised,
    so the caller can store the outcome.

    ``delivery_id`` (the ``X-SwapMeter-Delivery`` header, a new one when not given) stays
    the same on every try, and on every resend of the same event when the caller passes
    its own: receivers de-duplicate by it. No try starts that could not end within
    ``give_up_after_s`` of the first (the caller's lease on the delivery).
    """
    body = orjson.dumps(payload)
    key = key_bytes(secret)
    result = DeliveryResult(delivery_id=delivery_id or str(uuid.uuid4()))
    began = time.monotonic()
    own_client = client is None
    http = client or httpx.AsyncClient(trust_env=False, follow_redirects=False)
    try:
        for index in range(max(1, attempts)):
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                DELIVERY_HEADER: result.delivery_id,
                ATTEMPT_HEADER: str(index + 1),
            }
            attempt, retry, wait_at_least = await _try_once(
                http, url, body, key, headers, timeout_s, allow_hosts, max_backoff_s
            )
            result.attempts.append(attempt)
            if attempt.status is not None and 200 <= attempt.status < 300:
                result.delivered = True
                break
            if not retry or index == attempts - 1:
                break
            wait = max(wait_at_least, backoff_s(index, backoff_base_s, max_backoff_s))
            if give_up_after_s is not None and (
                time.monotonic() - began + wait + timeout_s > give_up_after_s
            ):
                break
            await asyncio.sleep(wait)
    finally:
        if own_client:
            await http.aclose()
    return result


async def _try_once(
    http: httpx.AsyncClient,
    url: str,
    body: bytes,
    key: bytes,
    headers: dict[str, str],
    timeout_s: float,
    allow_hosts: frozenset[str],
    max_backoff_s: float,
) -> tuple[Attempt, bool, float]:
    """One POST, signed as it is sent: the attempt, whether another try may help, and how
    long the receiver asked us to wait first (its Retry-After)."""
    at = datetime.now(UTC)
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    retry = True
    wait_at_least = 0.0
    try:
        async with asyncio.timeout(timeout_s):
            target = await vet_url(url, allow_hosts)
            signed = {**headers, SIGNATURE_HEADER: sign(key, body, int(time.time()))}
            response = await send_pinned(http, "POST", target, headers=signed, content=body)
            await response.aclose()
        status = response.status_code
        if response.is_success:
            retry = False
        elif status == 429 or status >= 500:
            wait_at_least = min(_retry_after_s(response) or 0.0, max_backoff_s)
        else:
            retry = False
    except UrlNotAllowed as exc:
        error, retry = f"UrlNotAllowed: {exc.message}", False
    except UrlFetchFailed as exc:
        error = f"UrlFetchFailed: {exc.message}"
    except (TimeoutError, httpx.TimeoutException):
        error = f"Timeout: no answer within {timeout_s:g} s"
    except httpx.HTTPError as exc:
        error = f"ConnectionFailed: {type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - recorded like any failed try, never raised
        log.warning("webhook try to %s failed unexpectedly", url, exc_info=True)
        error = f"Failed: {type(exc).__name__}"
    return Attempt(status, error, at, time.monotonic() - started), retry, wait_at_least
