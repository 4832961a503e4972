"""What the dashboard's write forms share: the Idempotency-Key fixed in the form, and the
checks of a form's fields by the Admin API's own request models.

A form that moves Tokens carries ``idempotency_key`` (``new_key()`` when the form is
rendered, a hidden field): ``once`` runs its write through the API's one mechanism
(``app.core.idempotency``, the ``idempotency_keys`` table, scope ``tenant:<id>``), so a
double click or a reloaded POST gets the first answer back instead of a second write.
The write runs in a savepoint with its key: when it fails (a refused amount...), the key
is released with it and the page can show the form again with the error, for a retry.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import pydantic
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import (
    AppError,
    InvalidAmount,
    InvalidIdempotencyKey,
    InvalidText,
    InvalidTime,
    ValidationError,
)
from app.core.idempotency.service import MAX_KEY_LENGTH, KeyClaim, request_fingerprint

Model = TypeVar("Model", bound=pydantic.BaseModel)

# The codes app.core.fields' validators raise (their error type is the contract's code).
_FIELD_CODES: dict[str, type[AppError]] = {
    cls.code: cls for cls in (InvalidAmount, InvalidText, InvalidTime)
}


def new_key() -> str:
    """A fresh Idempotency-Key for a form being rendered."""
    return str(uuid.uuid4())


def form_key(value: str | None) -> str:
    """The form's key, checked as the API checks the header (400 InvalidIdempotencyKey)."""
    if not value or len(value) > MAX_KEY_LENGTH or not value.isprintable():
        raise InvalidIdempotencyKey("This form has no valid idempotency key: reload the page")
    return value


def checked(model: type[Model], data: dict[str, Any]) -> Model:
    """``data`` read by the API's request model; its first problem as the contract's error
    (InvalidAmount, InvalidText, InvalidTime, else ValidationError)."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = exc.errors()
        coded = [e for e in errors if e["type"] in _FIELD_CODES]
        first = (coded or errors)[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"{where}: {first['msg']}" if where else first["msg"]
        raise _FIELD_CODES.get(first["type"], ValidationError)(message) from None


async def once(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    key: str,
    action: str,
    request: Any,
    operation: Callable[[], Awaitable[dict[str, Any]]],
    permanent: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Run ``operation`` once for this form ``key``: (its answer, False) the first time,
    (the first answer, True) for a replay of the same form. ``request`` is what the form
    asked (JSON-ready): the same key with another request is 409 IdempotencyKeyReused.
    ``permanent``: the key is never purged (bulk recharges, as in the API)."""
    claim = KeyClaim(
        scope=f"tenant:{tenant_id}",
        key=form_key(key),
        method_path=f"POST {action}"[:512],
        fingerprint=request_fingerprint(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)),
        permanent=permanent,
    )
    async with session.begin_nested():
        replay = await claim.take(session)
        if replay is not None:
            return dict(replay.body or {}), True
        answer = await operation()
        await claim.store_answer(session, 200, answer)
    return answer, False
