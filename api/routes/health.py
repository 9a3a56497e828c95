"""``/health``: can the API reach the broker, InfluxDB and the SQL database?"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Response
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.deps import StateDep

router = APIRouter(tags=["operations"])


class Check(BaseModel):
    """One dependency's state."""

    ok: bool
    detail: str = ""


class Health(BaseModel):
    """All dependencies; ``status`` is ``ok`` only if every check is."""

    status: Literal["ok", "degraded"]
    checks: dict[str, Check]


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(state: StateDep, response: Response) -> Health:
    """Report broker, InfluxDB and SQL reachability; 503 if any is down."""
    checks = {
        "broker": Check(
            ok=state.broker.connected.is_set(), detail=public_url(state.settings.mqtt_url)
        ),
        "influxdb": Check(
            ok=await state.influx.ping(), detail=public_url(state.settings.influx_url)
        ),
        "database": await state.read(_sql_check),
    }
    ok = all(c.ok for c in checks.values())
    if not ok:
        response.status_code = 503
    return Health(status="ok" if ok else "degraded", checks=checks)


def public_url(url: str) -> str:
    """``url`` without its ``user:password@``: /health answers anyone."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _sql_check(session: Session) -> Check:
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return Check(ok=False, detail=type(exc).__name__)
    return Check(ok=True)
