"""End-user API keys: ``sm_<prefix>_<secret>``.

The prefix (10 alphanumerics) is stored in clear and indexed so a key is found in one
lookup; the secret (32 random bytes) is stored only as its SHA-256 and compared in
constant time. Nothing about a key is cached, so a revocation takes effect on the very
next request in every process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
import uuid
from dataclasses import dataclass

KEY_SCHEME = "sm"
PREFIX_LENGTH = 10
SECRET_BYTES = 32
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
# last_used_at is written at most once per key per process per this many seconds.
LAST_USED_FLUSH_SECONDS = 60.0


@dataclass(frozen=True)
class NewApiKey:
    key: str  # shown once to the caller, never stored
    prefix: str
    secret_hash: bytes


def generate_api_key() -> NewApiKey:
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return NewApiKey(
        key=f"{KEY_SCHEME}_{prefix}_{secret}", prefix=prefix, secret_hash=hash_secret(secret)
    )


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_api_key(raw: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None. The secret may contain '_'."""
    parts = raw.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME:
        return None
    prefix, secret = parts[1], parts[2]
    if not (8 <= len(prefix) <= 32) or not prefix.isalnum() or len(secret) < 32:
        return None
    return prefix, secret


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), bytes(stored_hash))


class LastUsedThrottle:
    """Process-wide memory of when each key's last_used_at was last written.

    Keeps the per-request cost of "last used" at zero writes: a key is flushed to the
    database at most once per ``interval`` seconds per process (and the UPDATE itself only
    writes when the stored value is older than a minute).
    """

    def __init__(self, interval: float = LAST_USED_FLUSH_SECONDS, max_keys: int = 100_000) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._flushed_at: dict[uuid.UUID, float] = {}

    def due(self, key_id: uuid.UUID) -> bool:
        """True (and remembered) when this key should be flushed now."""
        now = time.monotonic()
        last = self._flushed_at.get(key_id)
        if last is not None and now - last < self.interval:
            return False
        if len(self._flushed_at) >= self.max_keys:
            self._flushed_at.clear()
        self._flushed_at[key_id] = now
        return True

    def forget(self, key_id: uuid.UUID) -> None:
        self._flushed_at.pop(key_id, None)


PROCESS_LAST_USED_THROTTLE = LastUsedThrottle()
