"""The exception handlers that render every failure in the contract's shape:
``{"error": {"code", "message", "request_id", "details"?}}`` with the code's status."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core import metrics
from app.core.errors.codes import (
    SETUP_CODES,
    AppError,
    BadRequest,
    Forbidden,
    InternalError,
    InvalidAmount,
    InvalidText,
    InvalidTime,
    MalformedJSON,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
    public_message,
    status_of,
)
from app.core.errors.database import database_unavailable, out_of_range, unstorable_text
from app.core.errors.openapi import document_common_errors
from inference.errors import InferenceError

log = logging.getLogger(__name__)

# Status codes that frameworks raise on their own, mapped to our codes (any other status
# is answered as "HTTPError": none is raised today).
_HTTP_CODES = {
    status_of(error_class): error_class.code
    for error_class in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        PayloadTooLarge,
        UnsupportedMediaType,
        RateLimited,
    )
}


# Field rules with a code of their own (app.core.fields): their pydantic error type is
# the code, answered instead of 422 ValidationError.
_FIELD_CODES = {cls.code: cls for cls in (InvalidAmount, InvalidText, InvalidTime)}


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


def _render(request: Request, exc: AppError) -> JSONResponse:
    return error_response(request, exc.status, exc.code, exc.message, exc.headers, exc.details)


def install_error_handlers(app: FastAPI) -> None:
    """The handlers, and in ``/openapi.json`` the errors they answer on every route."""
    document_common_errors(app)

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return _render(request, exc)

    @app.exception_handler(InferenceError)
    async def _inference_error(request: Request, exc: InferenceError) -> JSONResponse:
        if exc.code in SETUP_CODES:
            log.error("%s on %s: %s", exc.code, request.url.path, exc.message)
        return error_response(request, status_of(type(exc)), exc.code, public_message(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        # A bad amount, text or time is answered with its code, whatever else is wrong.
        coded = [e for e in errors if e["type"] in _FIELD_CODES]
        first = (coded or errors or [{"loc": [], "msg": "invalid request"}])[0]
        # Where the field is, not which validator of a union refused it.
        where = ".".join(
            str(p) for p in first["loc"] if p != "body" and not str(p).startswith("function-")
        )
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        json_invalid = any(e["type"] == "json_invalid" for e in errors)
        if coded:
            error_class = _FIELD_CODES[first["type"]]
        else:
            error_class = MalformedJSON if json_invalid else ValidationError
        return _render(request, error_class(message, details=errors))

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
            return _render(
                request,
                InvalidText(
                    "A text value contains a character that cannot be stored "
                    "(NUL, or an unpaired UTF-16 surrogate)"
                ),
            )
        if out_of_range(exc):  # nothing was applied: the statement failed whole
            return _render(
                request,
                InvalidAmount(
                    "The amount would take a balance past the largest one stored "
                    "(9,223,372,036,854,775,807 Tokens); nothing was applied"
                ),
            )
        if not database_unavailable(exc):
            return await _unexpected(request, exc)
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return _render(
            request,
            ServiceUnavailable(
                "The database is unavailable or out of connections; retry shortly",
                headers={"Retry-After": "1"},
            ),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _render(request, InternalError("Internal server error"))
