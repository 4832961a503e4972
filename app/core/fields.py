"""Request field types every domain shares, so that one rule answers one way everywhere:
Token amounts are JSON integers (else 400 InvalidAmount), text holds no control character
(else 400 InvalidText), times are RFC 3339 strings (else 400 InvalidTime).

Each rule is also the field's OpenAPI schema, so the document accepts what the server does;
the validation handler answers each failure with the code its error type names.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from app.core.errors.codes import InvalidAmount, InvalidText, InvalidTime
from app.core.errors.database import storable_text

# C0 controls but tab, line feed and carriage return; DEL and the C1 controls. As regex
# escapes, so the pattern reads the same in Python and ECMAScript (OpenAPI's regexes).
_CONTROLS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
TEXT_PATTERN = rf"^[^{_CONTROLS}]*$"
_CONTROL_RE = re.compile(rf"[{_CONTROLS}]")
# admin.service's and tenancy.service's address check, with text's rule.
EMAIL_PATTERN = rf"^[^@\s{_CONTROLS}]+@[^@\s{_CONTROLS}]+\.[^@\s{_CONTROLS}]+$"


def clean_text(value: str) -> bool:
    """Whether ``value`` is text as ``Text`` takes it (for bodies parsed by hand)."""
    return _CONTROL_RE.search(value) is None and storable_text(value)


def _text(value: str) -> str:
    if not clean_text(value):
        raise PydanticCustomError(
            InvalidText.code,
            "text must not hold control characters (tab, CR and LF aside) or unpaired surrogates",
        )
    return value


Text = Annotated[str, AfterValidator(_text), Field(json_schema_extra={"pattern": TEXT_PATTERN})]
"""A string without control characters (tab, CR, LF allowed): else 400 InvalidText."""

Email = Annotated[str, AfterValidator(_text), Field(json_schema_extra={"pattern": EMAIL_PATTERN})]
"""An email address as text; its form is checked by the service (400 InvalidEmail)."""


def token_amount(low: int, high: int) -> Any:
    """A Token amount from ``low`` to ``high``: a JSON integer, never ``true``, ``"5"`` or
    ``5.0`` (the same refusal as a bulk recharge's amounts): else 400 InvalidAmount."""

    def check(value: Any) -> int:
        if type(value) is not int or not low <= value <= high:  # bool is an int subclass
            raise PydanticCustomError(
                InvalidAmount.code,
                "must be an integer number of Tokens from {low} to {high}",
                {"low": low, "high": high},
            )
        return value

    schema = {"type": "integer", "minimum": low, "maximum": high}
    return Annotated[int, PlainValidator(check), WithJsonSchema(schema)]


# RFC 3339's date-time; the offset may be left out (UTC is meant).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?")


def _time_string(value: Any) -> Any:
    """Only an RFC 3339 string: pydantic would also read ``0.5`` or ``1700000000`` as a
    time (seconds since 1970), which a client never means in a query."""
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise PydanticCustomError(
            InvalidTime.code, "must be an RFC 3339 time, e.g. 2026-01-31T09:00:00Z"
        )
    return value


def _in_utc(value: datetime) -> datetime:
    """A time a client sent, in UTC (one without a time zone is taken as UTC)."""
    try:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00: 422, not a database error
        raise ValueError("the time is outside the range this API stores") from None


ClientTime = Annotated[datetime, BeforeValidator(_time_string), AfterValidator(_in_utc)]
"""A time a client sent (RFC 3339), in UTC: else 400 InvalidTime (422 ValidationError for
one in that form that is no real time, or past what is stored)."""
