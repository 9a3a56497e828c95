"""``gridwatch alerts``: the alerts service wired from the settings, and people's actions.

Kept apart from the other services' wiring (as ``ingest/main.py`` is) so the
alerts process imports only what it runs.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from prometheus_client import start_http_server
from sqlalchemy import select

from alerts.engine import default_rules
from alerts.models import RESOLVED, Alert
from alerts.outbox import RetryPolicy
from alerts.routing import Router
from alerts.service import AlertsConfig, AlertService
from alerts.sql import Database
from alerts.store import AlertStore
from broker.address import BrokerAddress
from gridwatch.clock import WallClock
from gridwatch.settings import Settings
from imagery.links import SnapshotLinks
from influx.client import InfluxClient
from ingest.decode import Limits
from registry.db import make_engine, make_sessionmaker
from registry.models import Community

log = logging.getLogger("gridwatch")


def alerts_config(settings: Settings) -> AlertsConfig:
    """The alerts service's configuration from the settings."""
    return AlertsConfig(
        broker=BrokerAddress.from_url(settings.mqtt_url),
        client_id=settings.alerts_client_id,
        base_url=settings.alerts_base_url,
        escalate_after_ms=settings.alerts_escalate_after_s * 1000,
        registry_refresh_s=settings.registry_refresh_s,
        policy=RetryPolicy(max_attempts=settings.alerts_send_attempts),
        send_timeout_s=settings.alerts_send_timeout_s,
        limits=Limits(
            max_payload_bytes=settings.max_payload_bytes,
            max_snapshot_bytes=settings.max_snapshot_bytes,
            ts_max_future_ms=settings.ts_max_future_s * 1000,
            ts_max_age_ms=settings.ts_max_age_s * 1000,
        ),
        links=SnapshotLinks.from_settings(settings),
    )


def database(settings: Settings) -> Database:
    """The SQL database (registry and alerts)."""
    return Database(make_sessionmaker(make_engine(settings.sql_url)))


def run_alerts(settings: Settings, stop: threading.Event) -> None:
    """Run the alerts service until ``stop`` is set."""
    influx = InfluxClient(
        settings.influx_url,
        settings.influx_db,
        username=settings.influx_user,
        password=settings.influx_password,
    )
    with influx:
        service = AlertService(alerts_config(settings), database(settings), influx)
        log.info(
            "alerts: %s -> %s (links %s)",
            settings.public_mqtt_url,
            settings.public_sql_url,
            settings.alerts_base_url,
        )
        server = None
        if settings.alerts_metrics_port:
            # As ingest and imagery serve theirs; compose's health check reads it.
            server, _ = start_http_server(
                settings.alerts_metrics_port,
                addr=settings.alerts_metrics_host,
                registry=service.metrics.registry,
            )
        try:
            service.start()
            stop.wait()
            log.info("alerts: stopping")
            service.stop()
        finally:
            if server is not None:  # the port is free again once run_alerts returns (tests)
                server.shutdown()
                server.server_close()


@dataclass(frozen=True, slots=True)
class AlertLine:
    """One alert as ``gridwatch alerts list`` shows it."""

    id: int
    status: str
    severity: str
    rule: str
    title: str
    place: str
    opened: datetime  # in the community's time zone


def list_alerts(settings: Settings, *, everything: bool, limit: int) -> list[AlertLine]:
    """The newest alerts, unresolved only unless ``everything``."""
    query = (
        select(Alert, Community.timezone)
        .join(Community, Community.id == Alert.community_id)
        .order_by(Alert.id.desc())
        .limit(limit)
    )
    if not everything:
        query = query.where(Alert.status != RESOLVED)
    with database(settings).read() as session:
        return [
            AlertLine(
                a.id,
                a.status,
                a.severity,
                a.rule,
                a.title,
                a.place,
                datetime.fromtimestamp(a.opened_ms / 1000, ZoneInfo(tz)),
            )
            for a, tz in session.execute(query)
        ]


def act_on_alert(
    settings: Settings, action: str, alert_id: int, by: str, text: str | None = None
) -> None:
    """``acknowledge``, ``resolve`` (``text``: a note) or ``comment`` (``text``) as ``by``."""
    store = AlertStore(
        default_rules(),
        Router(),
        base_url=settings.alerts_base_url,
        wall=WallClock(),
        links=SnapshotLinks.from_settings(settings),
    )
    now = WallClock().now_ms()
    with database(settings).write() as session:
        if action == "acknowledge":
            store.acknowledge(session, alert_id, by, now, text)
        elif action == "resolve":
            store.resolve(session, alert_id, by, now, text)
        else:
            store.comment(session, alert_id, by, text or "", now)
