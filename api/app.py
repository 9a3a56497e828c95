"""The FastAPI application."""

from __future__ import annotations

import gc
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from api.metrics import ApiMetrics, MetricsMiddleware
from api.models import Role, User
from api.routes import (
    alerts,
    buildings,
    commands,
    communities,
    devices,
    grids,
    health,
    households,
    live,
    login,
    metrics,
    snapshots,
    state,
    telemetry,
    units,
    users,
    workers,
)
from api.security import hash_password
from api.state import AppState
from gridwatch.settings import Settings, get_settings

log = logging.getLogger("gridwatch.api")

DEV_ADMIN = "admin"
DEV_PASSWORD_FILE = "dev-admin-password"  # noqa: S105  (a file name)

DESCRIPTION = """
The HTTP API of gridwatch: the registry, device state and telemetry, alerts,
commands to devices and a live stream, for control rooms, grid workers and
integrators.

**Log in** with `POST /api/v1/login/access-token` (OAuth2 password flow; the
*Authorize* button here does it) and send `Authorization: Bearer <token>`, or
send an API key as `X-API-Key`. Roles: `admin`, `operator` (a community's
control room), `grid_worker` (their grids only), `viewer` (read-only,
personal data masked).
"""

TAGS = [
    {"name": "operations", "description": "health and Prometheus metrics"},
    {"name": "login", "description": "bearer tokens (OAuth2 password flow)"},
    {"name": "users", "description": "users, roles and API keys (admins)"},
    {"name": "registry", "description": "communities, grids, buildings, units, households"},
    {"name": "devices", "description": "registered devices and their latest state"},
    {"name": "telemetry", "description": "history from InfluxDB, aggregated"},
    {"name": "alerts", "description": "list, read, acknowledge, comment, resolve"},
    {"name": "snapshots", "description": "patrol robots' snapshots: privacy version, thumbnail"},
    {"name": "commands", "description": "commands to devices and their audit trail"},
    {"name": "live", "description": "Server-Sent Events for control-room screens"},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; connections open at start-up and close at shutdown."""
    resolved = settings or get_settings()
    api_metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app_state = AppState.open(resolved, api_metrics)
        app.state.gridwatch = app_state
        if resolved.development:
            _bootstrap_dev_admin(app_state)
        # What exists now (modules, the app, its routes and models) lives as long as the
        # process: frozen, the garbage collector stops walking it again and again, which
        # cost a fifth of a history request (a day of points is thousands of lists).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app_state.close()

    app = FastAPI(
        title="gridwatch",
        summary="Smart-community monitoring: devices, telemetry, alerts, commands",
        description=DESCRIPTION,
        version="1.0.0",
        lifespan=lifespan,
        openapi_tags=TAGS,
    )
    # A request is matched against the routes in this order, so the ones that
    # screens poll come first (a route matched last cost a tenth of a millisecond
    # more); the docs list the tags in TAGS' order. login's /users/me must stay
    # before users' /users/{user_id}.
    modules = (
        devices,
        alerts,
        telemetry,
        state,
        health,
        metrics,
        login,
        users,
        communities,
        grids,
        workers,
        buildings,
        units,
        households,
        commands,
        snapshots,
        live,
    )
    for module in modules:
        app.include_router(module.router)
    routes = {
        route.endpoint: route.path
        for module in modules
        for route in module.router.routes
        if isinstance(route, APIRoute)
    }
    app.add_middleware(MetricsMiddleware, metrics=api_metrics, routes=routes)
    return app


def _bootstrap_dev_admin(app_state: AppState) -> None:
    """In development, with no user yet, make ``admin`` with a random password saved to a file.

    Nothing is guessable: the password is in ``GW_STATE_DIR/dev-admin-password``
    (readable only by its owner) and in the API's log.
    """
    with app_state.database.write() as session:
        if session.scalar(select(func.count()).select_from(User)):
            return
        password = secrets.token_urlsafe(12)
        session.add(
            User(
                username=DEV_ADMIN,
                full_name="development admin",
                role=Role.ADMIN.value,
                password_hash=hash_password(password),
                active=True,
                created_ms=app_state.clock.now_ms(),
            )
        )
    path = app_state.settings.state_dir / DEV_PASSWORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(password + "\n", encoding="utf-8")
    log.warning(
        "development mode: created user %r, password %s (also in %s)", DEV_ADMIN, password, path
    )
