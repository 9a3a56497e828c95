"""The FastAPI application."""

from __future__ import annotations

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
        try:
            yield
        finally:
            app_state.close()

    app = FastAPI(
        title="gridwatch",
        summary="Smart-community monitoring: devices, telemetry, alerts, commands",
        description=DESCRIPTION,
        version="1.0.0",
        lifespan=lifespan,
    )
    modules = (
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
        devices,
        state,
        telemetry,
        alerts,
        commands,
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
