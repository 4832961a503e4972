"""The operations dashboard: server-rendered pages at /dashboard for the admin accounts.

It calls the same services as the Admin API (``admin.service``, ``admin.reports``,
``billing``, ``app.jobs``...) and has no SQL of its own. Pages are Jinja2 templates
(``templates/``) with one stylesheet and one small script (``static/``); every form works
without JavaScript. docs/dashboard.md is the operators' guide.

How a page is built (the one pattern every page follows):

1. A module ``admin/dashboard/pages/<name>.py`` with ``router = page_router()`` (from
   ``admin.dashboard.web``), listed in ``admin/dashboard/pages/__init__.py``'s
   ``ROUTERS``. Its routes' paths start with ``/dashboard/<name>``. ``page_router`` puts
   the admin IP allowlist and the CSRF check on every route, and keeps them out of
   /openapi.json. A path listed in ``web.NAV`` shows in the navigation once served.
2. A read page takes ``operator: CurrentOperator`` (``admin.dashboard.security``): the
   signed-in operator, or a redirect to the sign-in page. ``chosen_tenant(request,
   operator)`` is the tenant of ``?tenant=`` (404 outside the operator's reach; a
   tenant-bound operator's own tenant by default); ``require_read(operator, tenant_id)``
   checks any other tenant id. Another tenant's object is 404, never 403.
3. A write route takes ``operator: WriteOperator`` (auditors get 403) and calls
   ``require_write(operator, tenant_id)`` with the tenant it touches (404 for another
   tenant), then the same service function the Admin API route calls, with
   ``operator.admin`` as the principal (the services check roles again and audit).
   After a write, redirect (303) to a GET page: a reload never repeats the write.
4. Answer with ``render(request, "<name>.html", **context)``: the layout gets
   ``operator``, ``csrf_token`` and the navigation itself. A template extends
   ``base.html``, fills ``{% block content %}``, and puts ``{{ csrf_field() }}`` in every
   POST form. A button or form that writes is shown only ``{% if operator.can_write %}``
   and carries ``data-write`` (``_macros.html``'s ``write_button`` does both): the
   browser tests check that an auditor sees none.
5. Errors: raise the contract's errors (``NotFound``, ``Forbidden``, ``BadRequest``...);
   under /dashboard they are rendered as error pages with their status.
6. Tests: ``tests/dashboard/`` drive Debian's Chromium with Playwright (see
   tests/dashboard/conftest.py: ``live_server``, ``browser_page``, ``sign_in``) and save a
   screenshot of every page visited under ``.artifacts/screenshots/``.
"""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount the dashboard (its pages, static files and error pages) on the app."""
    from admin.dashboard.pages import ROUTERS
    from admin.dashboard.web import install as install_web

    install_web(app, ROUTERS)
