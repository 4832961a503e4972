"""The dashboard's web plumbing: its router factory, templates, ``render`` and error pages.

Every page module builds its router with ``page_router()``: the admin IP allowlist and
the CSRF check apply to all its routes, and none appears in /openapi.json.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from markupsafe import Markup, escape
from starlette.exceptions import HTTPException as StarletteHTTPException

from admin.dashboard import sessions
from admin.dashboard.security import SignInRequired, admin_address_allowed, check_csrf
from app.core.errors import AppError, RateLimited

PREFIX = "/dashboard"
HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")

# The navigation, in order: (label, path). An entry shows once a route serves its path.
NAV: tuple[tuple[str, str], ...] = (
    ("Overview", PREFIX),
    ("Tenants", f"{PREFIX}/tenants"),
    ("Users", f"{PREFIX}/users"),
    ("Bulk recharge", f"{PREFIX}/bulk-recharge"),
    ("Jobs", f"{PREFIX}/jobs"),
    ("Flags", f"{PREFIX}/flags"),
    ("Audit", f"{PREFIX}/audit"),
)

# No inline script, nothing from another origin; inline styles only for the server's SVG
# charts (their <style> element), which carry no script.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def page_router() -> APIRouter:
    """The router a page module adds its routes to (paths start with ``/dashboard``)."""
    return APIRouter(
        include_in_schema=False,
        dependencies=[Depends(admin_address_allowed), Depends(check_csrf)],
    )


def _static_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


_STATIC_VERSION = _static_version()


def static_url(name: str) -> str:
    """A static file's URL, versioned by the files' contents (browsers cache them)."""
    return f"{PREFIX}/static/{name}?v={_STATIC_VERSION}"


# The token of the page being rendered: templates render synchronously inside render(),
# so macros imported without context (``{% import ... as m %}``) still find it.
_page_csrf_token: ContextVar[str] = ContextVar("dashboard_csrf_token", default="")


@pass_context
def csrf_field(context: Any) -> Markup:
    """``{{ csrf_field() }}`` inside every form that POSTs (in macros too)."""
    token = context.get("csrf_token") or _page_csrf_token.get()
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(escape(token))


templates.env.globals.update(csrf_field=csrf_field, static_url=static_url)


def render(
    request: Request, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """The page ``template`` (under admin/dashboard/templates/) with the layout's context:
    ``operator`` (None before sign-in), ``csrf_token``, ``nav``, ``path``."""
    subject = sessions.csrf_subject(request)
    settings = request.app.state.settings
    base = {
        "flash": FLASHES.get(request.query_params.get("flash", "")),
        "operator": getattr(request.state, "operator", None),
        "csrf_token": sessions.csrf_token(settings, subject) if subject else "",
        "nav": _nav(request),
        "path": request.url.path,
    }
    page_context = {**base, **context}
    reset = _page_csrf_token.set(page_context["csrf_token"])
    try:
        response = templates.TemplateResponse(
            request, template, page_context, status_code=status_code
        )
    finally:
        _page_csrf_token.reset(reset)
    response.headers.update(SECURITY_HEADERS)
    return response


# -- after a write: 303 to a page, with a flash message ------------------------------------

# The messages a page shows after a write (``?flash=<key>``): pages add theirs when
# imported. Only these texts are shown, so a crafted link cannot put words on a page.
FLASHES: dict[str, str] = {}


def see_other(location: str, flash: str | None = None) -> RedirectResponse:
    """The answer to a write that succeeded: 303 to the GET page ``location``, which then
    shows ``FLASHES[flash]`` (a reload repeats the GET, never the write)."""
    if flash is not None:
        assert flash in FLASHES, flash
        path, hash_sign, fragment = location.partition("#")
        location = path + ("&" if "?" in path else "?") + f"flash={flash}" + hash_sign + fragment
    response = RedirectResponse(location, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def _nav(request: Request) -> list[tuple[str, str]]:
    served = getattr(request.app.state, "dashboard_paths", frozenset())
    return [(label, path) for label, path in NAV if path in served]


# -- error pages ---------------------------------------------------------------------------

_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 429: "Too many tries"}


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    response = render(
        request,
        "error.html",
        status_code=status,
        title=_TITLES.get(status, "Something went wrong"),
        status=status,
        message=message,
    )
    return response


def _sign_in_redirect(request: Request) -> Response:
    if request.method not in ("GET", "HEAD"):
        return error_page(request, 401, "Your session has ended: sign in again.")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"{PREFIX}/login?next={_quote(target)}", status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="/")


def _is_dashboard(request: Request) -> bool:
    path = request.url.path
    return path == PREFIX or path.startswith(PREFIX + "/")


def install_error_pages(app: FastAPI) -> None:
    """Under /dashboard, errors are pages (the contract's JSON errors elsewhere)."""
    handlers = app.exception_handlers

    def wrap(exc_class: type[Exception], page: Any) -> None:
        fallback = handlers[exc_class]

        async def handler(request: Request, exc: Exception) -> Response:
            if _is_dashboard(request):
                return page(request, exc)
            return await fallback(request, exc)

        app.add_exception_handler(exc_class, handler)

    def app_error(request: Request, exc: AppError) -> Response:
        if exc.status >= 500:
            return error_page(request, exc.status, "The service could not answer; try again.")
        response = error_page(request, exc.status, exc.message)
        if isinstance(exc, RateLimited):
            response.headers.update(exc.headers)
        return response

    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
        return error_page(request, exc.status_code, message)

    def validation_error(request: Request, exc: RequestValidationError) -> Response:
        fields = ", ".join(str(e.get("loc", ["?"])[-1]) for e in exc.errors())
        return error_page(request, 400, f"Some fields are not valid: {fields}.")

    wrap(AppError, app_error)
    wrap(StarletteHTTPException, http_error)
    wrap(RequestValidationError, validation_error)
    app.add_exception_handler(SignInRequired, lambda request, exc: _sign_in_redirect(request))


def install(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    paths: set[str] = set()
    for router in routers:
        app.include_router(router)
        paths |= {getattr(route, "path", "") for route in router.routes}
    app.state.dashboard_paths = frozenset(paths)
    install_error_pages(app)
