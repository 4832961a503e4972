"""One error type for the whole service and the handlers that render the contract's shape.

Every failure a client can see is ``{"error": {"code", "message", "request_id"}}`` with a
stable CamelCase code; the README's catalogue lists them all.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import metrics
from app.db import causes
from inference.errors import InferenceError

log = logging.getLogger(__name__)


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
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.details = details


class BadRequest(AppError):
    code, status = "BadRequest", 400


class InvalidAmount(AppError):
    code, status = "InvalidAmount", 400


class Unauthorized(AppError):
    code, status = "Unauthorized", 401

    def __init__(self, message: str = "Missing or invalid credentials", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class InvalidCredentials(Unauthorized):
    code = "InvalidCredentials"


class InvalidToken(Unauthorized):
    code = "InvalidToken"


class TokenExpired(Unauthorized):
    code = "TokenExpired"


class InvalidApiKey(Unauthorized):
    code = "InvalidApiKey"


class InvalidIdempotencyKey(AppError):
    code, status = "InvalidIdempotencyKey", 400


class InsufficientBalance(AppError):
    code, status = "InsufficientBalance", 402


class Forbidden(AppError):
    code, status = "Forbidden", 403


class AccountFrozen(AppError):
    code, status = "AccountFrozen", 403


class NotFound(AppError):
    code, status = "NotFound", 404


class Conflict(AppError):
    code, status = "Conflict", 409


class ResultExpired(AppError):
    """A succeeded job's result is no longer stored (its retention ran out)."""

    code, status = "ResultExpired", 410


class IdempotencyKeyReused(AppError):
    code, status = "IdempotencyKeyReused", 409


class PayloadTooLarge(AppError):
    code, status = "PayloadTooLarge", 413


class UrlNotAllowed(AppError):
    """A media or webhook URL whose scheme or address we refuse to reach (SSRF guard)."""

    code, status = "UrlNotAllowed", 400


class UrlFetchFailed(AppError):
    """A media URL we may reach but could not read: DNS, timeout, refused or non-2xx."""

    code, status = "UrlFetchFailed", 400


class RateLimited(AppError):
    code, status = "RateLimited", 429


class ServiceUnavailable(AppError):
    code, status = "ServiceUnavailable", 503


# Engine errors keep their own codes; this table gives them an HTTP status.
INFERENCE_STATUS = {
    "ImageDecodeFailed": 400,
    "VideoDecodeFailed": 400,
    "NoFaceDetected": 400,
    "FaceSizeTooSmall": 400,
    "InvalidFaceMapping": 400,
    "VideoTooLong": 400,
    "ImagePixelExceed": 413,
    "UnsupportedMediaType": 415,
    "ModelNotInstalled": 503,
    "ModelLicenceRefused": 503,
    "ModelHashMismatch": 503,
    "ModelInvalid": 503,
}
# The engine's set-up errors: the service is not installed right (a model missing,
# refused or damaged). Their messages name server paths and admin commands, which are for
# the operator's log; a customer gets the code and ``SETUP_MESSAGE``.
SETUP_CODES = frozenset(
    {"ModelNotInstalled", "ModelLicenceRefused", "ModelHashMismatch", "ModelInvalid"}
)
SETUP_MESSAGE = (
    "The face-swap service is not set up for this request on our side (a model is missing "
    "or unusable); nothing was charged, try again later"
)


def public_message(exc: InferenceError) -> str:
    """What a customer is told of an engine error: its message, but for set-up errors."""
    return SETUP_MESSAGE if exc.code in SETUP_CODES else exc.message


# Status codes that frameworks raise on their own, mapped to our codes.
_HTTP_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "RateLimited",
}


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


def request_id_of(request: Request) -> str:
    return getattr(request.state, "request_id", "") or request.headers.get("x-request-id", "")


# Every 503 tells the client when to come back (the contract); a handler that knows
# better (the database's, the rate limiter's) sets its own.
DEFAULT_RETRY_AFTER_S = 30


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: Any = None,
) -> JSONResponse:
    if status == 503 and not any(name.lower() == "retry-after" for name in headers or ()):
        headers = {**(headers or {}), "Retry-After": str(DEFAULT_RETRY_AFTER_S)}
    metrics.count_error(code)
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "request_id": request_id_of(request),
    }
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.headers, exc.details)

    @app.exception_handler(InferenceError)
    async def _inference_error(request: Request, exc: InferenceError) -> JSONResponse:
        status = INFERENCE_STATUS.get(exc.code, 500)
        if exc.code in SETUP_CODES:
            log.error("%s on %s: %s", exc.code, request.url.path, exc.message)
        return error_response(request, status, exc.code, public_message(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        json_invalid = any(e["type"] == "json_invalid" for e in errors)
        code = "MalformedJSON" if json_invalid else "ValidationError"
        status = 400 if json_invalid else 422
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return error_response(request, status, code, message, details=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "HTTPError")
        return error_response(
            request, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None)
        )

    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(asyncpg.exceptions.PostgresError)  # raw driver use (bulk paths)
    @app.exception_handler(asyncpg.exceptions.DataError)  # a parameter it cannot encode
    @app.exception_handler(ConnectionError)  # a refused connect comes through unwrapped
    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        if unstorable_text(exc):
            return error_response(
                request,
                400,
                "InvalidText",
                "A text value contains a character that cannot be stored "
                "(NUL, or an unpaired UTF-16 surrogate)",
            )
        if out_of_range(exc):  # nothing was applied: the statement failed whole
            return error_response(
                request,
                400,
                "InvalidAmount",
                "The amount would take a balance past the largest one stored "
                "(9,223,372,036,854,775,807 Tokens); nothing was applied",
            )
        if not database_unavailable(exc):
            return await _unexpected(request, exc)
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(
            request,
            503,
            "ServiceUnavailable",
            "The database is unavailable or out of connections; retry shortly",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "InternalError", "Internal server error")
