"""Wiring: build each service from the settings. The CLI and ``make run`` call these."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from alerts.grids import rename_grids
from gridwatch.settings import Settings
from ingest.main import influx_client
from registry.db import make_engine, make_sessionmaker, migrate, writing
from registry.importer import ImportSummary, import_file
from simulators.engine import Report
from simulators.runner import Request, simulate

log = logging.getLogger("gridwatch")


def init_storage(settings: Settings, *, create_influx_database: bool = True) -> None:
    """Migrate the SQL schema and create the InfluxDB database and retention policy.

    Without ``create_influx_database`` (InfluxDB 2.x and 3.x refuse CREATE DATABASE
    over the v1 API; the operator makes the bucket or database) it checks instead that
    the database answers to the services' account, so that a missing DBRP mapping
    stops the deployment here rather than as rejected writes.
    """
    migrate(settings.sql_url)
    with influx_client(settings) as influx:
        if create_influx_database:
            influx.ensure_database(settings.influx_retention)
        else:
            influx.check_database()
    sql = settings.public_sql_url
    log.info("storage ready: %s, %s/%s", sql, settings.influx_url, settings.influx_db)


def import_community(settings: Settings, path: Path) -> ImportSummary:
    """Migrate, then load a community file into the registry."""
    migrate(settings.sql_url)
    engine = make_engine(settings.sql_url)
    try:
        # The import reads the community before it replaces it, while the services
        # may be writing the same SQLite file: writing() waits for them.
        with writing(make_sessionmaker(engine)) as session:
            summary = import_file(session, path)
            rename_grids(session, summary.community, summary.renamed_grids)
            return summary
    finally:
        engine.dispose()


def run_simulation(settings: Settings, request: Request, stop: threading.Event) -> Report:
    """Simulate what ``request`` asks (replay up to now, then live), reporting progress."""
    return simulate(request, settings.sql_url, settings.mqtt_url, stop)
