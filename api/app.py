"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.routes import devices, health
from api.state import AppState
from gridwatch.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; connections open at start-up and close at shutdown."""
    resolved = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gridwatch = AppState.open(resolved)
        try:
            yield
        finally:
            app.state.gridwatch.close()

    app = FastAPI(
        title="gridwatch",
        summary="Smart-community monitoring: devices, telemetry, alerts, commands",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(devices.router)
    return app
