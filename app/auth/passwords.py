"""Admin password hashing with argon2id.

Hashing and verifying are deliberately slow (tens of milliseconds of CPU), so they run in
a worker thread and never block the event loop.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024

# Process-wide: the hasher holds only its parameters; changing them makes old hashes
# "need rehash", which verify_password reports so the caller can store a fresh one.
_HASHER = PasswordHasher()
_dummy_hash_cache: list[str] = []


def password_problem(password: str) -> str | None:
    """Why this password is refused as a new admin password, or None when it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"password must be at most {MAX_PASSWORD_LENGTH} characters"
    return None


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_HASHER.hash, password)


async def verify_password(password_hash: str, password: str) -> tuple[bool, str | None]:
    """(matches, new hash when the stored one uses outdated parameters)."""
    return await asyncio.to_thread(_verify_sync, password_hash, password)


async def burn_verification(password: str) -> None:
    """Spend the time of one real verification, so unknown emails answer like wrong passwords."""
    await asyncio.to_thread(_verify_sync, _dummy_hash(), password)


def _verify_sync(password_hash: str, password: str) -> tuple[bool, str | None]:
    try:
        _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    if _HASHER.check_needs_rehash(password_hash):
        return True, _HASHER.hash(password)
    return True, None


def _dummy_hash() -> str:
    if not _dummy_hash_cache:
        _dummy_hash_cache.append(_HASHER.hash(secrets.token_urlsafe(24)))
    return _dummy_hash_cache[0]
