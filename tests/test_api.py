"""API v1 against the real servers: /health and the latest state of a device."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from devices.points import STATUS_MEASUREMENT
from gridwatch.clock import WallClock
from gridwatch.settings import Settings
from influx.client import InfluxClient
from influx.lineprotocol import Point, encode_batch
from registry.db import make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_file
from stack.servers import Influxd, Mosquitto

pytestmark = pytest.mark.integration

DOOR = "zjxc-door-b03-u2"


@pytest.fixture()
def api(
    tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, influx_db: InfluxClient
) -> Iterator[TestClient]:
    sql_url = f"sqlite:///{tmp_path / 'gridwatch.db'}"
    migrate(sql_url)
    with make_sessionmaker(make_engine(sql_url))() as session:
        import_file(session, DEMO_COMMUNITY_FILE)
        session.commit()
    settings = Settings(  # type: ignore[call-arg]
        mqtt_url=mosquitto.url,
        influx_url=influxd.url,
        influx_db=influx_db.database,
        database_url=sql_url,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_health_reports_every_dependency(api: TestClient) -> None:
    body = api.get("/health").json()
    assert set(body["checks"]) == {"broker", "influxdb", "database"}
    assert body["checks"]["influxdb"]["ok"] and body["checks"]["database"]["ok"]


def test_latest_state_of_a_device(api: TestClient, influx_db: InfluxClient) -> None:
    now = WallClock().now_ms()
    tags = {"community": "zjxc", "device_id": DOOR, "building": "3", "unit": "2"}
    influx_db.write(
        encode_batch(
            [
                Point("door", tags, {"seq": 1, "locked": True, "open": False}, now - 60_000),
                Point("door", tags, {"seq": 2, "locked": False, "open": True}, now),
                Point(STATUS_MEASUREMENT, {**tags, "kind": "door"}, {"online": True}, now - 90_000),
            ]
        )
    )
    body = api.get(f"/api/v1/devices/{DOOR}/latest").json()
    assert body["place"] == "3号楼2单元"
    assert body["online"] is True
    assert body["last_seen_ms"] == now
    assert body["values"] == {"seq": 2, "locked": False, "open": True}


def test_unknown_device_is_404(api: TestClient) -> None:
    assert api.get("/api/v1/devices/nobody/latest").status_code == 404


@pytest.mark.parametrize("hostile", ["a'b", 'a"b', "x' OR '1'='1", "a b", "a;DROP"])
def test_hostile_device_ids_are_refused_before_any_query(api: TestClient, hostile: str) -> None:
    assert api.get(f"/api/v1/devices/{hostile}/latest").status_code == 422


def test_health_is_503_when_influxdb_is_unreachable(tmp_path: Path, mosquitto: Mosquitto) -> None:
    settings = Settings(  # type: ignore[call-arg]
        mqtt_url=mosquitto.url,
        influx_url="http://127.0.0.1:9",
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["influxdb"]["ok"] is False
