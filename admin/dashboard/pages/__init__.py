"""The dashboard's pages, one module each; a new page module adds its router here."""

from __future__ import annotations

from fastapi import APIRouter

from admin.dashboard.pages import overview, recharge, signin, user_actions, users

ROUTERS: tuple[APIRouter, ...] = (
    signin.router,
    overview.router,
    users.router,
    user_actions.router,
    recharge.router,
)
