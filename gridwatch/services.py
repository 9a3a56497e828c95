"""Wiring: build each service from the settings. The CLI and ``make run`` call these."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import make_url

from broker.connection import BrokerAddress
from gridwatch.clock import SimulatedClock, WallClock
from gridwatch.settings import Settings
from ingest.main import influx_client
from registry.db import make_engine, make_sessionmaker, migrate
from registry.importer import ImportSummary, import_file
from registry.records import load_communities, load_devices
from simulators.engine import Report, Simulation
from simulators.fleet import Fleet

log = logging.getLogger("gridwatch")


def init_storage(settings: Settings) -> None:
    """Migrate the SQL schema and create the InfluxDB database and retention policy."""
    migrate(settings.sql_url)
    with influx_client(settings) as influx:
        influx.ensure_database(settings.influx_retention)
    sql = make_url(settings.sql_url).render_as_string(hide_password=True)
    log.info("storage ready: %s, %s/%s", sql, settings.influx_url, settings.influx_db)


def import_community(settings: Settings, path: Path) -> ImportSummary:
    """Migrate, then load a community file into the registry."""
    migrate(settings.sql_url)
    sessions = make_sessionmaker(make_engine(settings.sql_url))
    with sessions() as session:
        summary = import_file(session, path)
        session.commit()
    return summary


def run_simulation(
    settings: Settings,
    communities: list[str],
    *,
    hours: float,
    speed: float,
    follow: bool,
    seed: int,
    qos: int,
    stop: threading.Event,
) -> Report:
    """Replay ``hours`` up to now at ``speed``, then (``follow``) go on in real time."""
    sessions = make_sessionmaker(make_engine(settings.sql_url))
    with sessions() as session:
        known = {c.id: c for c in load_communities(session)}
        missing = sorted(set(communities) - set(known))
        if missing:
            raise SystemExit(
                f"unknown communities {missing}: import them first (gridwatch registry import)"
            )
        records = [d for c in communities for d in load_devices(session, c)]
    now = WallClock().now_ms()
    start = now - int(hours * 3_600_000) // 60_000 * 60_000
    clock = SimulatedClock(start, speed if hours > 0 else 1.0)
    fleet = Fleet(BrokerAddress.from_url(settings.mqtt_url), qos=qos)
    simulation = Simulation(
        [known[c] for c in communities], records, clock=clock, seed=seed, transport=fleet
    )
    fleet.on_command = simulation.queue_command
    for record in records:
        fleet.add(record.device_id, record.community, record.kind)
    fleet.wait_connected()
    log.info("simulating %d devices from %s at %sx", len(records), _iso(start), speed)
    simulation.announce(online=True)
    simulation.run(now, stop, progress=_progress)
    if follow and not stop.is_set():
        log.info("replay done; carrying on in real time")
        simulation.follow_live(stop, progress=_progress)
    simulation.announce(online=False)
    fleet.flush()
    fleet.close()
    return simulation.report


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _progress(report: Report) -> None:
    log.info("simulated up to %s: %d messages", _iso(report.reached_ms), report.total)
