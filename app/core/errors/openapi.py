"""How each route's errors reach ``/openapi.json``.

Every answer of status 400 or more is an ``ErrorBody``; for each status, a route's entry
lists the codes it can carry, with their meanings (each class's docstring) and one
example each. A route declares its own with ``responses=error_responses(NotFound, ...)``;
the errors every route of a router shares (its authentication's) go once on the router,
a ``DocumentedRouter``; the errors of the handlers themselves (500 anywhere, 422 and 400
where FastAPI validates a request, 415 where a route reads a body) are added to every
operation by ``document_common_errors``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from app.core.errors.codes import (
    ErrorClass,
    InternalError,
    MalformedJSON,
    UnsupportedMediaType,
    ValidationError,
    status_of,
)
from app.core.routes import CheckedRoute

Responses = dict[int | str, dict[str, Any]]

_JSON = "application/json"
_SCHEMAS = "#/components/schemas/"
_EXAMPLE_REQUEST_ID = "5f0c6e1d2a7b4c39a8e4d1f2b3c4d5e6"


class ErrorDetail(BaseModel):
    code: str = Field(
        description="A stable CamelCase code; each status lists the codes it can carry"
    )
    message: str = Field(description="What went wrong, for a person (it may change; the code not)")
    request_id: str = Field(description="The answer's X-Request-ID: quote it when asking for help")
    details: Any = Field(
        default=None,
        description="More on some codes, e.g. InsufficientBalance's available and needed, "
        "ValidationError's list of problems; absent otherwise",
    )


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"code", "message", "request_id", "details"?}}``."""

    error: ErrorDetail


def error_responses(*errors: ErrorClass) -> Responses:
    """FastAPI ``responses`` for these errors: one entry per status, listing its codes."""
    responses: Responses = {}
    for error in errors:
        meaning = " ".join((inspect.getdoc(error) or error.code).split("\n\n")[0].split())
        body = {"code": error.code, "message": meaning, "request_id": _EXAMPLE_REQUEST_ID}
        example = {error.code: {"summary": meaning, "value": {"error": body}}}
        entry = _with_examples({"model": ErrorBody}, example)
        responses = merge_responses(responses, {status_of(error): entry})
    return responses


def merge_responses(first: Responses, second: Responses) -> Responses:
    """``first``'s entries and ``second``'s; where both document errors for one status, the
    entry lists the codes of both (for any other entry, ``second``'s wins, as in FastAPI)."""
    merged = dict(first)
    for status, entry in second.items():
        earlier = merged.get(status)
        if earlier is not None and _is_error_entry(earlier) and _is_error_entry(entry):
            entry = _with_examples(earlier, _examples(entry))
        merged[status] = entry
    return merged


class DocumentedRouter(APIRouter):
    """An APIRouter whose ``responses`` are the errors all its routes can answer (those of
    its authentication, say), to which each route's own ``responses`` add, status by status.

    FastAPI's own APIRouter lets a route's entry for a status replace the router's: a
    route's 403 AccountFrozen would hide the router's 403 Forbidden.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Every route refuses a body in a media type it does not read (app.core.routes).
        kwargs.setdefault("route_class", CheckedRoute)
        super().__init__(*args, **kwargs)

    def add_api_route(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        responses: Responses | None = None,
        **kwargs: Any,
    ) -> None:
        merged = merge_responses(self.responses, responses or {})
        super().add_api_route(path, endpoint, responses=merged, **kwargs)


def document_common_errors(app: FastAPI) -> None:
    """Add to every operation of ``app``'s OpenAPI document the errors the handlers answer
    on any route: 500 InternalError, and where FastAPI validates the request (it documents
    its own 422 there, in a shape we never send), 422 ValidationError and, for a JSON body,
    400 MalformedJSON."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        done = app.openapi_schema is not None  # generate() keeps what it made
        spec = generate()
        if not done:
            _add_common_errors(spec)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _add_common_errors(spec: dict[str, Any]) -> None:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    body_schema = ErrorBody.model_json_schema(ref_template=_SCHEMAS + "{model}")
    for name, schema in body_schema.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas.setdefault("ErrorBody", body_schema)
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            common: tuple[ErrorClass, ...] = (InternalError,)
            if _ref(responses.get("422", {})) == _SCHEMAS + "HTTPValidationError":
                del responses["422"]
                common += (ValidationError,)
                if _JSON in operation.get("requestBody", {}).get("content", {}):
                    common += (MalformedJSON,)
            if "requestBody" in operation:  # app.core.routes: a body it does not read
                common += (UnsupportedMediaType,)
            for status, entry in error_responses(*common).items():
                entry = {k: v for k, v in entry.items() if k != "model"}
                entry["content"][_JSON]["schema"] = {"$ref": _SCHEMAS + "ErrorBody"}
                responses.update(merge_responses(responses, {str(status): entry}))
            operation["responses"] = dict(sorted(responses.items()))
    # FastAPI's own 422 schemas, now used by no operation (the name ValidationError is
    # one of our codes, not the shape of its item).
    text = json.dumps(spec["paths"])
    for name in ("HTTPValidationError", "ValidationError"):
        if f'"{_SCHEMAS}{name}"' not in text:
            schemas.pop(name, None)


def _ref(entry: dict[str, Any]) -> str | None:
    ref: str | None = entry.get("content", {}).get(_JSON, {}).get("schema", {}).get("$ref")
    return ref


def _is_error_entry(entry: dict[str, Any]) -> bool:
    return entry.get("model") is ErrorBody or _ref(entry) == _SCHEMAS + "ErrorBody"


def _examples(entry: dict[str, Any]) -> dict[str, Any]:
    examples: dict[str, Any] = entry.get("content", {}).get(_JSON, {}).get("examples", {})
    return examples


def _with_examples(entry: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    """``entry`` with ``examples`` (one per code) added, and a description listing them."""
    media = entry.get("content", {}).get(_JSON, {})
    union = {**media.get("examples", {}), **examples}
    description = "\n".join(f"- `{code}`: {ex['summary']}" for code, ex in union.items())
    return {
        **entry,
        "description": description,
        "content": {**entry.get("content", {}), _JSON: {**media, "examples": union}},
    }
