"""What every route refuses before its own code runs: a body in a media type it does not
read (415), a query parameter it does not know (a misspelt ``tenant_id`` must not widen
an answer) or given twice where it takes one value (422).

One route class for all routers (``DocumentedRouter`` uses it), reading what each route
accepts from the route itself: the media types of its OpenAPI request body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.core.errors.codes import UnsupportedMediaType, ValidationError

JSON = "application/json"


def body_media_types(route: APIRoute) -> frozenset[str] | None:
    """The media types the route reads a body in; None: it takes no body."""
    declared = (route.openapi_extra or {}).get("requestBody", {}).get("content")
    if declared:
        return frozenset(declared)
    if route.body_field is not None:
        return frozenset({JSON})
    return None


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


def check_media_type(request: Request, accepted: frozenset[str]) -> None:
    """415 UnsupportedMediaType unless the body is one of ``accepted``; JSON only in UTF-8
    (RFC 8259), so a Latin-1 body is never read as something it does not say."""
    header = request.headers.get("content-type", "")
    media_type, *params = (part.strip() for part in header.split(";"))
    media_type = media_type.lower()
    wanted = " or ".join(sorted(accepted))
    if not media_type:
        raise UnsupportedMediaType(f"Content-Type is missing: send {wanted}")
    if media_type not in accepted:
        raise UnsupportedMediaType(f"Content-Type {media_type} is not accepted: send {wanted}")
    if media_type == JSON:
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
                "utf-8",
                "utf8",
            ):
                raise UnsupportedMediaType("JSON is read in UTF-8 only: send charset=utf-8")


def _query_parameters(dependant: Dependant) -> dict[str, bool]:
    """The query parameters of the route and its dependencies: name -> takes several."""
    names = {
        param.alias: _is_sequence(param.field_info.annotation) for param in dependant.query_params
    }
    for sub in dependant.dependencies:
        names.update(_query_parameters(sub))
    return names


def _is_sequence(annotation: Any) -> bool:
    text = repr(annotation)
    return any(kind in text for kind in ("list[", "List[", "set[", "tuple[", "Sequence["))


class CheckedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        media_types = body_media_types(self)
        known = _query_parameters(self.dependant)

        async def checked(request: Request) -> Response:
            if media_types is not None and _has_body(request):
                check_media_type(request, media_types)
            for name in request.query_params:
                if name not in known:
                    raise ValidationError(f"{name}: not a query parameter of this route")
                if not known[name] and len(request.query_params.getlist(name)) > 1:
                    raise ValidationError(f"{name}: given more than once; it takes one value")
            return await handler(request)

        return checked
