"""The FastAPI application: its lifespan (database, Redis), middleware, error handlers and
routers (``app.routers``; health, readiness and metrics: ``app.operations``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis

from app.core import metrics
from app.core.db import Database
from app.core.errors import install_error_handlers
from app.core.settings import Settings, get_settings
from app.docs import install_docs
from app.middleware import RequestContextMiddleware, hide_signatures_in_access_log
from app.routers import include_routers, on_startup


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database.from_settings(settings)
        app.state.redis = Redis.from_url(
            settings.redis_url or "redis://127.0.0.1:6379/0",
            socket_connect_timeout=1,
            socket_timeout=2,
        )
        await on_startup(app)
        try:
            yield
        finally:
            await app.state.redis.aclose()
            await app.state.db.dispose()
            metrics.process_exiting()

    app = FastAPI(
        title="SwapMeter",
        version="1.0.0",
        description="Face-swap API sold on prepaid Tokens.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,  # install_docs: the same pages, with nothing from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_middleware(RequestContextMiddleware)
    hide_signatures_in_access_log()
    install_error_handlers(app)
    include_routers(app)
    install_docs(app)
    return app
