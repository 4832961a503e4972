"""Signing webhooks: the contract's ``X-SwapMeter-Signature: t=<unix>,v1=<hex>`` over
``"<t>.<body>"``, like Stripe's, so customers can reuse what they know. ``verify`` is the
reference implementation our docs point to.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-SwapMeter-Signature"
SIGNATURE_VERSION = "v1"


def key_bytes(secret: bytes | str) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: bytes | str, body: bytes, t: int) -> str:
    """The signature header value for ``body`` sent at unix time ``t``."""
    mac = hmac.new(key_bytes(secret), str(t).encode() + b"." + body, hashlib.sha256)
    return f"t={t},{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify(
    secret: bytes | str,
    header: str,
    body: bytes,
    tolerance_s: int = 300,
    *,
    now: float | None = None,
) -> bool:
    """True when ``header`` signs exactly ``body`` with ``secret`` within ``tolerance_s``.

    The tolerance stops a captured delivery from being replayed later. Several ``v1=``
    values are accepted so a secret can be rotated without a gap. Comparison is constant
    time.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            # Unix seconds: ASCII digits, and few enough to compare with a float clock.
            if not (value.isascii() and value.isdigit() and len(value) <= 12):
                return False
            timestamp = int(value)
        elif name == SIGNATURE_VERSION:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).rpartition("=")[2]
    return any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates)
