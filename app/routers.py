"""Where each domain's router is mounted, and what runs at start-up.

One list, so that a reader sees the whole HTTP surface in one place.
"""

from __future__ import annotations

from fastapi import FastAPI


def include_routers(app: FastAPI) -> None:
    # Domains add their routers here as they land.
    pass


async def on_startup(app: FastAPI) -> None:
    """Start-up work that needs the database (bootstrap admin, ...)."""
    pass
