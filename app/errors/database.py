"""What a failed statement means for the client: the database down, or a value it cannot
hold. The error handlers answer 503, 400 InvalidText or 400 InvalidAmount from these."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.db import causes


def database_unavailable(exc: BaseException) -> bool:
    """True for failures of the database itself, not of the statement: refused or dropped
    connections, the server out of connection slots, the pool exhausted. Mostly nothing
    was written; a connection lost during COMMIT may have committed, which is why writes
    that move Tokens take an Idempotency-Key: retried with it, they apply once."""
    if isinstance(exc, PoolTimeout) or getattr(exc, "connection_invalidated", False):
        return True
    return _caused_by(exc, _DATABASE_DOWN)


def storable_text(text: str) -> bool:
    """No NUL (PostgreSQL text never holds one) and no unpaired surrogate (not UTF-8): a
    value checked with this never fails its statement (``unstorable_text``)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def storable_form(text: str) -> str:
    """``text`` as an answer that echoes it can show (and the idempotency store keep): a
    NUL or an unpaired surrogate is written as an escape (``\\x00``, ``\\ud800``)."""
    if storable_text(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def unstorable_text(exc: BaseException) -> bool:
    """True when a statement failed on a text value the database cannot hold: a NUL
    character (PostgreSQL text never contains one) or an unpaired surrogate (no UTF-8)."""
    return _caused_by(exc, _UNSTORABLE_TEXT)


def out_of_range(exc: BaseException) -> bool:
    """True when a statement failed because a number went past what its column holds: a
    Token amount that would take a balance beyond 2^63 - 1 (bigint)."""
    return _caused_by(exc, (asyncpg.exceptions.NumericValueOutOfRangeError,))


def _caused_by(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    # The driver's error sits under one or two wrappers (SQLAlchemy's ``orig``).
    return any(isinstance(cause, types) for cause in causes(exc))


_DATABASE_DOWN = (
    OSError,  # refused, reset, unreachable
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.CannotConnectNowError,  # starting up or shutting down
    asyncpg.exceptions.ConnectionDoesNotExistError,
)
_UNSTORABLE_TEXT = (
    asyncpg.exceptions.CharacterNotInRepertoireError,  # 22021: NUL in text or jsonb
    asyncpg.exceptions.UntranslatableCharacterError,  # 22P05: \u0000 in jsonb
    UnicodeEncodeError,  # an unpaired surrogate the driver cannot encode
)
