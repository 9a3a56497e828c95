"""``gridwatch ingest``: the ingestor wired from the settings.

Kept apart from the other services' wiring so the ingest process imports only
what it runs (its resident memory is part of its promise).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from prometheus_client import start_http_server

from broker.address import BrokerAddress
from devices.contract import DeviceRecord
from gridwatch.clock import WallClock
from gridwatch.settings import Settings
from influx.client import InfluxClient
from ingest.decode import Limits
from ingest.service import IngestConfig, Ingestor
from registry.db import make_engine, make_sessionmaker
from registry.records import get_device, load_devices

log = logging.getLogger("gridwatch")


def influx_client(settings: Settings) -> InfluxClient:
    """An InfluxDB client for the configured database."""
    return InfluxClient(
        settings.influx_url,
        settings.influx_db,
        username=settings.influx_user,
        password=settings.influx_password,
    )


class RegistryDevices:
    """The SQL registry as ingest's ``DeviceSource``."""

    def __init__(self, settings: Settings) -> None:
        self._sessions = make_sessionmaker(make_engine(settings.sql_url))

    def load_all(self) -> Mapping[str, DeviceRecord]:
        """Every registered device by id."""
        with self._sessions() as session:
            return {d.device_id: d for d in load_devices(session)}

    def lookup(self, device_id: str) -> DeviceRecord | None:
        """One device by id."""
        with self._sessions() as session:
            return get_device(session, device_id)


def ingest_config(settings: Settings) -> IngestConfig:
    """The ingestor's configuration from the settings."""
    return IngestConfig(
        broker=BrokerAddress.from_url(settings.mqtt_url),
        client_id=settings.ingest_client_id,
        share_group=settings.ingest_share_group,
        batch_size=settings.ingest_batch_size,
        flush_ms=settings.ingest_flush_ms,
        inflight=settings.ingest_inflight,
        registry_refresh_s=settings.registry_refresh_s,
        limits=Limits(
            max_payload_bytes=settings.max_payload_bytes,
            max_snapshot_bytes=settings.max_snapshot_bytes,
            ts_max_future_ms=settings.ts_max_future_s * 1000,
            ts_max_age_ms=settings.ts_max_age_s * 1000,
        ),
    )


def run_ingest(settings: Settings, stop: threading.Event) -> None:
    """Run the ingestor until ``stop`` is set."""
    with influx_client(settings) as influx:
        ingestor = Ingestor(ingest_config(settings), influx, RegistryDevices(settings), WallClock())
        log.info(
            "ingest: %s -> %s/%s", settings.public_mqtt_url, settings.influx_url, settings.influx_db
        )
        if settings.ingest_metrics_port:
            start_http_server(
                settings.ingest_metrics_port,
                addr=settings.ingest_metrics_host,
                registry=ingestor.metrics.registry,
            )
        ingestor.start()
        stop.wait()
        log.info("ingest: stopping")
        ingestor.stop()
