"""Signed, expiring result links: HMAC-signed ``/api/v1/results/<key>`` URLs for the local
store (served by our API); the S3 store hands out presigned URLs instead."""

from __future__ import annotations

import hashlib
import hmac
import time

from app.core.settings import Settings
from app.core.storage.base import ResultStore

RESULTS_URL_PATH = "/api/v1/results/"


def signed_link(store: ResultStore, key: str, ttl_s: int) -> dict[str, str]:
    """A result's URL, valid ``ttl_s`` from now, and when it expires (the job JSON's
    ``url`` and ``expires_at``)."""
    return {
        "url": store.signed_url(key, ttl_s),
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + ttl_s)),
    }


def _sign(secret: bytes, key: str, expires: int) -> str:
    return hmac.new(secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


def results_signing_secret(settings: Settings) -> bytes:
    """The configured secret, else one derived from the JWT secret (one secret to manage)."""
    if settings.results_signing_secret:
        return settings.results_signing_secret.encode()
    return hmac.new(
        settings.jwt_secret.encode(), b"swapmeter result urls v1", hashlib.sha256
    ).digest()
