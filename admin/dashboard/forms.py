"""What the dashboard's forms share: reading their fields, and writes keyed by an
Idempotency-Key that the form carries.

A form that moves Tokens carries a hidden ``idempotency_key``, a fresh uuid each time the
form is rendered (``new_key``); its POST runs through ``keyed_write``, the same
``KeyClaim`` as the Admin API's keyed routes (``app.core.idempotency``): a double click or
a reload of the POST applies once, the second answer being the first one's.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson
import pydantic
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import (
    AppError,
    InvalidAmount,
    InvalidIdempotencyKey,
    InvalidText,
    InvalidTime,
    ValidationError,
)
from app.core.fields import clean_text
from app.core.idempotency.service import MAX_KEY_LENGTH, KeyClaim, request_fingerprint


def new_key() -> str:
    """The Idempotency-Key of one rendering of a form."""
    return str(uuid.uuid4())


def checked_key(value: str) -> str:
    if not (1 <= len(value) <= MAX_KEY_LENGTH and value.isprintable()):
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters"
        )
    return value


async def keyed_write(
    session: AsyncSession,
    request: Request,
    *,
    scope: str,
    key: str,
    fields: dict[str, Any],
    operation: Callable[[], Awaitable[Any]],
    permanent: bool = False,
) -> tuple[Any, bool]:
    """Run ``operation`` once per ``key`` (in ``scope``, for this path and these form
    ``fields``): its JSON-ready answer, and whether it is a replay of an earlier one. The
    same key with other fields is 409 IdempotencyKeyReused. ``permanent``: the key is
    never purged (a bulk recharge's, as the API's)."""
    claim = KeyClaim(
        scope=scope,
        key=checked_key(key),
        method_path=f"{request.method} {request.url.path}"[:512],
        fingerprint=request_fingerprint(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)),
        permanent=permanent,
    )
    replay = await claim.take(session)
    if replay is not None:
        return replay.body, True
    answer = await operation()
    await claim.store_answer(session, 200, answer)
    return answer, False


def text_field(value: str, name: str, *, max_length: int, required: bool = False) -> str:
    """Text typed in a form, stripped, as the API's ``Text`` takes it: else 400
    InvalidText (control characters, too long, or blank when ``required``)."""
    value = value.strip()
    if not clean_text(value):
        raise InvalidText(f"{name} must not hold control characters")
    if len(value) > max_length or (required and not value):
        low = 1 if required else 0
        raise InvalidText(f"{name} must be {low} to {max_length} characters")
    return value


def optional_int(value: str, name: str, *, low: int, high: int) -> int | None:
    """A whole number typed in a form (blank: None), else 400 InvalidAmount."""
    value = value.strip().replace(",", "").replace("_", "")
    if not value:
        return None
    if not value.lstrip("-").isdigit() or len(value) > 19:
        raise InvalidAmount(f"{name} must be a whole number")
    number = int(value)
    if not low <= number <= high:
        raise InvalidAmount(f"{name} must be between {low:,} and {high:,}")
    return number


def utc_time(value: str | None, name: str, *, end_of_day: bool = False) -> datetime | None:
    """A time typed in a form, UTC: ``YYYY-MM-DD`` (the day's start, or the next day's
    with ``end_of_day``) or ``YYYY-MM-DDTHH:MM[:SS]`` (datetime-local); blank: None.
    Anything else is 400 InvalidTime."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value) + timedelta(days=1 if end_of_day else 0)
            return datetime.combine(day, time(), UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidTime(f"{name} must be a date (YYYY-MM-DD) or a time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# The codes app.core.fields' validators raise (their error type is the contract's code).
_FIELD_CODES: dict[str, type[AppError]] = {
    cls.code: cls for cls in (InvalidAmount, InvalidText, InvalidTime)
}


def checked(model: type[pydantic.BaseModel], data: dict[str, Any]) -> Any:
    """Form fields read by the Admin API's own request ``model``; its first problem as the
    contract's error (InvalidAmount, InvalidText, InvalidTime, else ValidationError)."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = exc.errors()
        coded = [e for e in errors if e["type"] in _FIELD_CODES]
        first = (coded or errors)[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"{where}: {first['msg']}" if where else first["msg"]
        raise _FIELD_CODES.get(first["type"], ValidationError)(message) from None
