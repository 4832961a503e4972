"""Signed, expiring result links: HMAC-signed ``/api/v1/results/<key>`` URLs for the local
store (served by our API); the S3 store hands out presigned URLs instead."""

from __future__ import annotations

import hashlib
import hmac
import time

from app.core.settings import Settings
from app.core.storage.base import ResultStore

RESULTS_URL_PATH = "/api/v1/results/"
# The store's folder of job results (inputs live in "inputs/"). A link leaves it out of
# its path, which already says "results": ``/api/v1/results/<tenant>/<job>.jpg``. Links
# made before (``/api/v1/results/results/...``) name the whole key; both verify.
RESULTS_FOLDER = "results/"


def link_path(key: str) -> str:
    """The part of a result link's path after ``RESULTS_URL_PATH`` for ``key``."""
    return key.removeprefix(RESULTS_FOLDER)


def keys_of_link(path: str) -> tuple[str, ...]:
    """The keys a link's path may name, most likely first: its signature says which.

    ``t/j.jpg`` is the result ``results/t/j.jpg`` (a link of today) or a key outside the
    results folder; ``results/t/j.jpg`` is that key (a link made before the folder was
    left out of paths, still valid until it expires).
    """
    if path.startswith(RESULTS_FOLDER):
        return (path,)
    return (RESULTS_FOLDER + path, path)


def signed_link(store: ResultStore, key: str, ttl_s: int) -> dict[str, str]:
    """A result's URL, valid ``ttl_s`` from now, and when it expires (the job JSON's
    ``url`` and ``expires_at``)."""
    return {
        "url": store.signed_url(key, ttl_s),
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + ttl_s)),
    }


def sign_key(secret: bytes, key: str, expires: int) -> str:
    """The signature of a local result link: HMAC-SHA256 of the key and its expiry."""
    return hmac.new(secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


def results_signing_secret(settings: Settings) -> bytes:
    """The configured secret, else one derived from the JWT secret (one secret to manage)."""
    if settings.results_signing_secret:
        return settings.results_signing_secret.encode()
    return hmac.new(
        settings.jwt_secret.encode(), b"swapmeter result urls v1", hashlib.sha256
    ).digest()
