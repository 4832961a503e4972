"""Reading a bulk recharge: strict about the envelope, lenient per entry.

The envelope (``{users, amount}`` or ``{entries: [{user, amount}]}``, ``mode``, ``reason``,
``operator``, and for a batch of grants ``expires_at`` and ``label``) fails the whole call
when wrong; an entry's problem fails that entry only, with its code in the report's
``failed_users``. Entry rules, checked in this order:

- ``InvalidEntry``: the entry is not an object with a non-empty string ``user``;
- ``DuplicateEntry``: the user already appeared earlier in the batch. The first occurrence
  is the one that counts; every later one fails, whatever its amount;
- ``InvalidAmount``: the amount is not an integer in 1..max_amount (booleans, floats and
  strings are refused, ``10`` is fine, ``10.0`` and ``"10"`` are not);

then, against the tenant's accounts (billing.bulk_apply): ``UserNotFound`` (no such
external id in this tenant) and ``AccountFrozen`` (the user's account is frozen).

A caller that read the entries from a file (the dashboard's CSV upload) may pass the rows
its reader refused already (a bad date, a wrong number of fields) in ``refused``: they are
reported with their own code and message at their index, and counted in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.core.errors import (
    DuplicateEntry,
    InvalidAmount,
    InvalidEntry,
    InvalidText,
    InvalidTime,
    TooManyEntries,
    ValidationError,
    storable_form,
    storable_text,
)
from app.core.fields import clean_text

MODES = ("soft", "atomic")
MAX_REASON = 1000
MAX_OPERATOR = 320
MAX_LABEL = 100


@dataclass(frozen=True)
class BulkRequest:
    """A parsed body: raw user and amount values (checked per entry later)."""

    users: list[Any]
    amounts: list[Any]
    mode: str = "soft"
    reason: str | None = None
    operator: str | None = None
    expires_at: datetime | None = None  # set: the entries are grants that expire then
    label: str | None = None  # the grants' campaign
    # index -> (code, message) of entries refused before the service saw them (a file's
    # reader): reported as they are, at their index.
    refused: dict[int, tuple[str, str]] = field(default_factory=dict)


def parse_bulk_request(payload: Any, *, max_entries: int, max_amount: int) -> BulkRequest:
    """Accepts ``{users, amount}`` or ``{entries: [{user, amount}]}``; see module docs.

    Envelope problems fail the call (422 ValidationError, 400 TooManyEntries or, for the
    shared ``amount`` of the users shape, 400 InvalidAmount); entry problems do not.
    """
    if not isinstance(payload, dict):
        raise ValidationError("The body must be a JSON object")
    has_users, has_entries = "users" in payload, "entries" in payload
    if has_users == has_entries:
        raise ValidationError("Send either 'users' with 'amount', or 'entries'")
    items = payload["users"] if has_users else payload["entries"]
    where = "users" if has_users else "entries"
    if not isinstance(items, list):
        raise ValidationError(f"'{where}' must be a list")
    if not items:
        raise ValidationError(f"'{where}' is empty")
    if len(items) > max_entries:
        raise TooManyEntries(f"At most {max_entries} entries per batch, got {len(items)}")

    mode = payload.get("mode", "soft")
    if mode not in MODES:
        raise ValidationError("'mode' is 'soft' or 'atomic'")
    reason = _optional_text(payload, "reason", MAX_REASON)
    operator = _optional_text(payload, "operator", MAX_OPERATOR)
    grant = {
        "expires_at": _expires_at(payload),
        "label": _optional_text(payload, "label", MAX_LABEL),
    }
    if grant["label"] is not None and grant["expires_at"] is None:
        raise ValidationError("'label' names a campaign of grants: send it with 'expires_at'")

    if has_users:
        if "amount" not in payload:
            raise ValidationError("'amount' is required with 'users'")
        amount = payload["amount"]
        if amount_problem(amount, max_amount):
            raise InvalidAmount(f"'amount' must be an integer from 1 to {max_amount}")
        return BulkRequest(list(items), [amount] * len(items), mode, reason, operator, **grant)

    users: list[Any] = []
    amounts: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            users.append(item.get("user"))
            amounts.append(item.get("amount"))
        else:
            users.append(None)
            amounts.append(None)
    return BulkRequest(users, amounts, mode, reason, operator, **grant)


def _expires_at(payload: dict[str, Any]) -> datetime | None:
    """``expires_at``: an RFC 3339 date-time with a time zone, in the future."""
    value = payload.get("expires_at")
    if value is None:
        return None
    problem = "'expires_at' must be an RFC 3339 date-time with a time zone"
    # A date-time (RFC 3339 allows a space for the T), not a bare date or a number.
    if not isinstance(value, str) or not 20 <= len(value) <= 64 or value[10] not in "Tt ":
        raise InvalidTime(problem)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidTime(problem) from None
    if parsed.tzinfo is None:
        raise InvalidTime(problem)
    if parsed <= datetime.now(UTC):
        raise ValidationError("'expires_at' is in the past: grants must expire in the future")
    return parsed


def _optional_text(payload: dict[str, Any], name: str, limit: int) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, str) and not clean_text(value):
        raise InvalidText(f"'{name}' holds a control character or an unpaired surrogate")
    if not is_text(value, limit):
        raise ValidationError(
            f"'{name}' must be a string of at most {limit} characters, without NUL "
            "or unpaired surrogates"
        )
    return value


def is_text(value: Any, limit: int) -> bool:
    """A non-empty string of at most ``limit`` characters that the database can store."""
    return isinstance(value, str) and 0 < len(value) <= limit and storable_text(value)


def amount_problem(amount: Any, max_amount: int) -> bool:
    return type(amount) is not int or not 1 <= amount <= max_amount


def check_entries(
    bulk: BulkRequest, max_amount: int
) -> tuple[dict[str, tuple[int, int]], list[dict[str, Any]]]:
    """The entries that count, as user -> (index in the request, amount), and the failures
    of the others (InvalidEntry, DuplicateEntry, InvalidAmount)."""
    failures: list[dict[str, Any]] = []
    first: dict[str, tuple[int, int]] = {}  # user -> (index, amount) of its first occurrence
    seen: set[str] = set()
    for index, (user, amount) in enumerate(zip(bulk.users, bulk.amounts, strict=True)):
        if index in bulk.refused:
            if isinstance(user, str):
                seen.add(user)
            failures.append(failure(index, user, *bulk.refused[index]))
        elif not is_text(user, 255):
            failures.append(
                failure(
                    index, user, InvalidEntry.code, "An entry is an object with a 'user' string"
                )
            )
        elif user in seen:
            failures.append(
                failure(
                    index,
                    user,
                    DuplicateEntry.code,
                    "This user already appears earlier in the batch",
                )
            )
        elif amount_problem(amount, max_amount):
            seen.add(user)
            failures.append(
                failure(
                    index,
                    user,
                    InvalidAmount.code,
                    f"The amount must be an integer from 1 to {max_amount}",
                )
            )
        else:
            seen.add(user)
            first[user] = (index, amount)
    return first, failures


def failure(index: int | None, user: Any, code: str, message: str) -> dict[str, Any]:
    """One entry of a report's ``failed_users``."""
    return {
        # Reported back, so stored: what the database cannot hold is shown escaped.
        "user": storable_form(user) if isinstance(user, str) else None,
        "code": code,
        "message": message,
        "index": index,
    }
