"""``gridwatch imagery``: the imagery service wired from the settings."""

from __future__ import annotations

import logging
import threading

from prometheus_client import start_http_server

from broker.address import BrokerAddress
from broker.connection import make_client
from gridwatch.clock import WallClock
from gridwatch.settings import Settings
from imagery.files import ImageFiles
from imagery.pipeline import Limits
from imagery.privacy import DetectorSettings
from imagery.service import ImageryConfig, ImageryService, PublishFailed
from ingest.main import RegistryDevices
from registry.db import make_engine, make_sessionmaker

log = logging.getLogger("gridwatch.imagery")

PUBLISH_TIMEOUT_S = 10.0


class MqttPublisher:
    """Events out through a paho client of their own (QoS 1, waits for the PUBACK)."""

    def __init__(self, address: BrokerAddress, client_id: str) -> None:
        self._client = make_client(address, client_id)
        self._client.connect_async(address.host, address.port)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait until the broker has it; ``PublishFailed`` otherwise."""
        info = self._client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(PUBLISH_TIMEOUT_S)
        except (RuntimeError, ValueError) as exc:  # not connected, or the queue is full
            raise PublishFailed(str(exc)) from exc
        if not info.is_published():
            raise PublishFailed(f"no PUBACK within {PUBLISH_TIMEOUT_S:.0f} s")

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


def imagery_config(settings: Settings) -> ImageryConfig:
    """The service's configuration from the settings."""
    return ImageryConfig(
        broker=BrokerAddress.from_url(settings.mqtt_url),
        client_id=settings.imagery_client_id,
        share_group=settings.imagery_share_group,
        inflight=settings.imagery_inflight,
        registry_refresh_s=settings.registry_refresh_s,
        retention_days=settings.imagery_retention_days,
        limits=Limits(
            max_bytes=settings.max_snapshot_bytes, max_pixels=settings.imagery_max_pixels
        ),
        detectors=DetectorSettings.widths(
            settings.imagery_face_width, settings.imagery_person_width
        ),
    )


def run_imagery(settings: Settings, stop: threading.Event) -> None:
    """Run the imagery service until ``stop`` is set."""
    config = imagery_config(settings)
    publisher = MqttPublisher(config.broker, f"{config.client_id}-events")
    service = ImageryService(
        config,
        make_sessionmaker(make_engine(settings.sql_url)),
        RegistryDevices(settings),
        ImageFiles(settings.imagery_root),
        publisher,
        WallClock(),
    )
    log.info(
        "imagery: %s -> %s (files in %s)",
        settings.public_mqtt_url,
        settings.public_sql_url,
        settings.imagery_root,
    )
    if settings.imagery_metrics_port:
        start_http_server(
            settings.imagery_metrics_port,
            addr=settings.imagery_metrics_host,
            registry=service.metrics.registry,
        )
    service.start()
    stop.wait()
    log.info("imagery: stopping")
    service.stop()
    publisher.close()
