"""The dashboard's pages, one module each; a new page module adds its router here."""

from __future__ import annotations

from fastapi import APIRouter

from admin.dashboard.pages import (
    audit,
    jobs,
    overview,
    plans,
    recharge,
    signin,
    tenants,
    user_actions,
    users,
)

ROUTERS: tuple[APIRouter, ...] = (
    signin.router,
    overview.router,
    tenants.router,
    plans.router,
    jobs.router,
    audit.router,
    users.router,
    user_actions.router,
    recharge.router,
)
