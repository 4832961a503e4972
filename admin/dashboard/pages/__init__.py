"""The dashboard's pages, one module each; a new page module adds its router here."""

from __future__ import annotations

from fastapi import APIRouter

from admin.dashboard.pages import (
    audit,
    flags,
    jobs,
    overview,
    plans,
    recharge,
    rules,
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
    rules.router,
    jobs.router,
    audit.router,
    flags.router,
    users.router,
    user_actions.router,
    recharge.router,
)
