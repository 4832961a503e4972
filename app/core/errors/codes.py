"""Every error code a client can see, one class each: the class is the code.

A class's docstring is its meaning as the API reference and ``/openapi.json`` give it
(the first paragraph, kept in step with the error catalogue in the docs). A class that
narrows another (``UserNotFound`` of ``NotFound``) subclasses it, so that code catching
the broader error still catches it. The engine's codes keep their classes in
``inference.errors`` (the engine knows nothing of HTTP): they are re-exported here, and
``INFERENCE_STATUS`` gives each its status.
"""

from __future__ import annotations

from typing import Any

from inference.errors import (
    FaceSizeTooSmall,
    ImageDecodeFailed,
    ImagePixelExceed,
    InferenceError,
    InvalidFaceMapping,
    ModelHashMismatch,
    ModelInvalid,
    ModelLicenceRefused,
    ModelNotInstalled,
    NoFaceDetected,
    UnsupportedMediaType,
    VideoDecodeFailed,
    VideoTooLong,
)


class AppError(Exception):
    """A failure with a contract error code and an HTTP status."""

    code = "InternalError"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        details: Any = None,
    ) -> None:
        # ``code`` and ``status`` are left from before each code had its class: the call
        # sites that still pass them are listed by tests/app/test_error_codes.py.
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.details = details


# -- 400 -------------------------------------------------------------------------------------


class BadRequest(AppError):
    """A parameter is invalid."""

    code, status = "BadRequest", 400


class MalformedJSON(BadRequest):
    """The body is not valid JSON."""

    code = "MalformedJSON"


class InvalidAmount(AppError):
    """A Token amount is not an integer between 1 and the largest allowed, or would take a
    balance past 2^63 - 1 Tokens."""

    code, status = "InvalidAmount", 400


class InvalidIdempotencyKey(AppError):
    """``Idempotency-Key`` is empty or longer than 255 characters."""

    code, status = "InvalidIdempotencyKey", 400


class InvalidBase64(BadRequest):
    """A swap input is not valid base64."""

    code = "InvalidBase64"


class InvalidOutputFormat(BadRequest):
    """``output_format`` does not fit the target (mp4 is for videos, jpg/png/webp for
    images)."""

    code = "InvalidOutputFormat"


class InvalidCursor(BadRequest):
    """A ``cursor`` this API did not return."""

    code = "InvalidCursor"


class InvalidDateRange(BadRequest):
    """A report's ``to`` is before its ``from``, or the range is longer than a report
    covers."""

    code = "InvalidDateRange"


class InvalidText(BadRequest):
    """A text value holds a control character (tab, CR and LF aside) or one the database
    cannot store (an unpaired surrogate)."""

    code = "InvalidText"


class InvalidTime(BadRequest):
    """A time is not an RFC 3339 date-time (``2026-01-31T09:00:00Z``), or lies outside
    the range stored."""

    code = "InvalidTime"


class InvalidSlug(BadRequest):
    """A tenant slug is not 1 to 64 characters of ``a-z0-9-``, starting and ending with a
    letter or digit."""

    code = "InvalidSlug"


class InvalidEmail(BadRequest):
    """An email address is not valid."""

    code = "InvalidEmail"


class InvalidRole(BadRequest):
    """An admin role is not one this tenant (or the platform) may have."""

    code = "InvalidRole"


class WeakPassword(BadRequest):
    """A new admin password is too short (at least 10 characters) or too long."""

    code = "WeakPassword"


class TooManyEntries(BadRequest):
    """A bulk recharge or user import has more entries than allowed in one call."""

    code = "TooManyEntries"


class UrlNotAllowed(AppError):
    """A URL input or webhook is not http(s), carries credentials, or leads to a non-public
    address."""

    code, status = "UrlNotAllowed", 400


class UrlFetchFailed(AppError):
    """A URL input could not be read (DNS, timeout, non-2xx, too many redirects), or a
    ``webhook_url``'s host does not resolve now."""

    code, status = "UrlFetchFailed", 400


# Per-entry codes: reported for one entry of a batch (a bulk recharge's ``failed_users``, a
# user import's ``failed``), while the rest of it is applied; never an answer's status.


class InvalidEntry(BadRequest):
    """An entry of a batch is not an object of the expected shape (reported per entry)."""

    code = "InvalidEntry"


class DuplicateEntry(BadRequest):
    """The entry's user appears earlier in the batch, which counts the first one (reported
    per entry)."""

    code = "DuplicateEntry"


class InvalidExternalId(BadRequest):
    """An imported user's ``external_id`` is missing, not a string, or not a valid id
    (reported per entry)."""

    code = "InvalidExternalId"


class InvalidDisplayName(BadRequest):
    """An imported user's ``display_name`` is not a string, or not valid (reported per
    entry)."""

    code = "InvalidDisplayName"


# -- 401 -------------------------------------------------------------------------------------


class Unauthorized(AppError):
    """Credentials are missing."""

    code, status = "Unauthorized", 401

    def __init__(self, message: str = "Missing or invalid credentials", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class InvalidCredentials(Unauthorized):
    """Wrong email or password."""

    code = "InvalidCredentials"


class InvalidToken(Unauthorized):
    """The admin JWT is forged or malformed, or its account is disabled."""

    code = "InvalidToken"


class TokenExpired(Unauthorized):
    """The admin JWT has expired: sign in again."""

    code = "TokenExpired"


class InvalidApiKey(Unauthorized):
    """The API key is unknown, malformed or revoked."""

    code = "InvalidApiKey"


# -- 402, 403 --------------------------------------------------------------------------------


class InsufficientBalance(AppError):
    """Not enough available Tokens for the hold; ``details`` has ``available`` and
    ``needed``."""

    code, status = "InsufficientBalance", 402


class Forbidden(AppError):
    """The caller may not do this: its role (auditors are read-only; some actions are for
    platform admins only), its address (not allow-listed) or its tenant (suspended)."""

    code, status = "Forbidden", 403


class InvalidSignature(Forbidden):
    """A signed result link was altered or has expired."""

    code = "InvalidSignature"


class AccountFrozen(AppError):
    """The end user's account is frozen."""

    code, status = "AccountFrozen", 403


# -- 404, 405 --------------------------------------------------------------------------------


class NotFound(AppError):
    """No such object, or it belongs to another tenant."""

    code, status = "NotFound", 404


class UserNotFound(NotFound):
    """No such end user in this tenant."""

    code = "UserNotFound"


class PlanNotFound(NotFound):
    """No plan of this name in this tenant (also a user's ``plan`` that names none)."""

    code = "PlanNotFound"


class MethodNotAllowed(AppError):
    """The path exists, but not with this HTTP method."""

    code, status = "MethodNotAllowed", 405


# -- 409, 410 --------------------------------------------------------------------------------


class Conflict(AppError):
    """The object already exists (e.g. a tenant slug), or its state forbids the action."""

    code, status = "Conflict", 409


class IdempotencyKeyReused(AppError):
    """The ``Idempotency-Key`` was used with a different body."""

    code, status = "IdempotencyKeyReused", 409


class JobFinished(Conflict):
    """Cancel of a job that already succeeded or failed."""

    code = "JobFinished"


class ResultNotReady(Conflict):
    """The job has not finished yet."""

    code = "ResultNotReady"


class Canceled(Conflict):
    """The job was canceled (its ``error.code`` too), so it has no result to download."""

    code = "Canceled"


class JobFailed(Conflict):
    """The job failed, so it has no result to download (``details.error_code`` says why)."""

    code = "JobFailed"


class ResultExpired(AppError):
    """The job succeeded but its result is no longer stored (its retention ran out)."""

    code, status = "ResultExpired", 410


# -- 413, 416, 422, 429 ----------------------------------------------------------------------


class PayloadTooLarge(AppError):
    """The body, a batch or a download is too large."""

    code, status = "PayloadTooLarge", 413


class RangeNotSatisfiable(AppError):
    """A result download's ``Range`` lies past the end of the file."""

    code, status = "RangeNotSatisfiable", 416


class ValidationError(AppError):
    """The request is well-formed but a field is missing or has the wrong type; ``details``
    lists each problem.

    The contract's code, not pydantic's exception of the same name.
    """

    code, status = "ValidationError", 422


class RateLimited(AppError):
    """Too many requests; see ``Retry-After``."""

    code, status = "RateLimited", 429


# -- 500, 503 --------------------------------------------------------------------------------


class InternalError(AppError):
    """A bug: the request id is in the logs (a job failing so is not charged)."""

    code, status = "InternalError", 500


class ServiceUnavailable(AppError):
    """A dependency is down (the database unreachable or out of connections, Redis with
    fail-closed limits); see ``Retry-After``."""

    code, status = "ServiceUnavailable", 503


class WorkerLost(AppError):
    """The workers running the job stopped too often; its Tokens were released."""

    code, status = "WorkerLost", 503


class QueueTimeout(AppError):
    """No worker ran the job in time after its submission; its Tokens were released."""

    code, status = "QueueTimeout", 503


# -- the engine's codes ----------------------------------------------------------------------

# Their HTTP status; an engine error not listed (``InferenceFailed``, the base) is a 500.
INFERENCE_STATUS: dict[str, int] = {
    cls.code: status
    for cls, status in {
        ImageDecodeFailed: 400,
        VideoDecodeFailed: 400,
        NoFaceDetected: 400,
        FaceSizeTooSmall: 400,
        InvalidFaceMapping: 400,
        VideoTooLong: 400,
        ImagePixelExceed: 413,
        UnsupportedMediaType: 415,
        ModelNotInstalled: 503,
        ModelLicenceRefused: 503,
        ModelHashMismatch: 503,
        ModelInvalid: 503,
    }.items()
}

# The engine's set-up errors: the service is not installed right (a model missing,
# refused or damaged). Their messages name server paths and admin commands, which are for
# the operator's log; a customer gets the code and ``SETUP_MESSAGE``.
SETUP_CODES = frozenset(
    cls.code for cls in (ModelNotInstalled, ModelLicenceRefused, ModelHashMismatch, ModelInvalid)
)
SETUP_MESSAGE = (
    "The face-swap service is not set up for this request on our side (a model is missing "
    "or unusable); nothing was charged, try again later"
)

ErrorClass = type[AppError] | type[InferenceError]


def status_of(error: ErrorClass) -> int:
    """The HTTP status an error class answers with."""
    if issubclass(error, AppError):
        return error.status
    return INFERENCE_STATUS.get(error.code, 500)


def public_message(exc: InferenceError) -> str:
    """What a customer is told of an engine error: its message, but for set-up errors."""
    return SETUP_MESSAGE if exc.code in SETUP_CODES else exc.message
