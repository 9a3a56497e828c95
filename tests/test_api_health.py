"""/health answers anyone: it names its dependencies, never their credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes.health import public_url
from influx.client import InfluxClient
from stack.servers import Influxd, Mosquitto
from tests.test_api import demo_registry, make_settings

pytestmark = pytest.mark.integration


def test_public_url_drops_only_the_credentials() -> None:
    assert public_url("mqtt://api:s3cret@127.0.0.1:11883") == "mqtt://127.0.0.1:11883"
    assert public_url("mqtts://a:b:c@@broker.example.net") == "mqtts://broker.example.net"
    assert public_url("http://127.0.0.1:18086/x") == "http://127.0.0.1:18086/x"


def test_health_shows_no_password(
    tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, influx_db: InfluxClient
) -> None:
    settings = make_settings(mosquitto, influxd, influx_db, demo_registry(tmp_path))
    settings.mqtt_url = f"mqtt://gridwatch.api:s3cret-password@127.0.0.1:{mosquitto.port}"
    settings.influx_url = influxd.url.replace("://", "://reader:s3cret-password@")
    with TestClient(create_app(settings)) as client:
        body = client.get("/health").text
    assert "s3cret" not in body
    assert f"127.0.0.1:{mosquitto.port}" in body
