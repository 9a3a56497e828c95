"""The ingestor against real Mosquitto and influxd: registry reloads, InfluxDB set-up."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.address import BrokerAddress
from devices.contract import DeviceRecord
from gridwatch.clock import WallClock
from influx.client import InfluxClient
from ingest.directory import DeviceDirectory, StaticDevices
from ingest.service import IngestConfig, Ingestor
from stack.servers import Mosquitto
from tests.contract_helpers import record

pytestmark = pytest.mark.integration


@pytest.fixture()
def publisher(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    address = BrokerAddress.from_url(mosquitto.url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(address.host, address.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def _wait(condition: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_device_registered_after_start_is_accepted(
    mosquitto: Mosquitto, influx_db: InfluxClient, publisher: mqtt.Client
) -> None:
    registered: dict[str, DeviceRecord] = {}
    config = IngestConfig(
        broker=BrokerAddress.from_url(mosquitto.url),
        client_id=f"ingest-{influx_db.database}",
        registry_refresh_s=3600,
    )
    ingestor = Ingestor(config, influx_db, StaticDevices(registered), WallClock())
    ingestor.start()
    try:
        assert ingestor.subscribed.wait(10)
        door = record("door", f"late-{influx_db.database}")
        registered[door.device_id] = door
        body = {"ts": WallClock().now_ms(), "seq": 1, "locked": True, "open": False}
        payload = json.dumps({**body, "rssi_dbm": -60, "temp_c": 20.0})
        publisher.publish(f"sc/zjxc/door/{door.device_id}/telemetry", payload, qos=1)
        _wait(lambda: ingestor.metrics.value("gridwatch_ingest_written_total", kind="door") == 1)
    finally:
        ingestor.stop()
    assert (
        ingestor.metrics.value(
            "gridwatch_ingest_rejected_total", reason="unknown_device", kind="door"
        )
        == 0
    )


def test_retention_policy_is_created_then_altered(influx_db: InfluxClient) -> None:
    influx_db.ensure_database("30d")
    influx_db.ensure_database("30d")
    rows = influx_db.query(f'SHOW RETENTION POLICIES ON "{influx_db.database}"')[0].records()
    policy = next(r for r in rows if r["name"] == "gridwatch")
    assert policy["duration"] == "720h0m0s" and policy["default"] is True


class CountingSource(StaticDevices):
    """A source that counts one-row lookups."""

    def __init__(self, devices: dict[str, DeviceRecord]) -> None:
        super().__init__(devices)
        self.lookups = 0

    def lookup(self, device_id: str) -> DeviceRecord | None:
        self.lookups += 1
        return super().lookup(device_id)


def test_unknown_ids_cost_one_lookup_each_not_one_per_message() -> None:
    source = CountingSource({})
    directory = DeviceDirectory(source, refresh_s=3600)
    for _ in range(1000):
        assert directory.get("intruder") is None
    assert source.lookups == 1


def test_a_flood_of_distinct_unknown_ids_is_rate_limited() -> None:
    source = CountingSource({})
    directory = DeviceDirectory(source, refresh_s=3600)
    for i in range(10_000):
        directory.get(f"intruder-{i}")
    assert source.lookups <= 25  # the bucket's burst, not ten thousand queries


def test_a_device_registered_later_is_found_by_lookup() -> None:
    registered: dict[str, DeviceRecord] = {}
    directory = DeviceDirectory(StaticDevices(registered), refresh_s=3600)
    door = record("door", "late-door")
    registered[door.device_id] = door
    assert directory.get("late-door") == door


def test_self_report_writes_stats_rejections_and_device_positions(
    mosquitto: Mosquitto, influx_db: InfluxClient, publisher: mqtt.Client
) -> None:
    doors = {
        d.device_id: d for d in (record("door", f"rep-{i}-{influx_db.database}") for i in range(3))
    }
    config = IngestConfig(
        broker=BrokerAddress.from_url(mosquitto.url), client_id=f"rep-{influx_db.database}"
    )
    ingestor = Ingestor(config, influx_db, StaticDevices(doors), WallClock())
    ingestor.start()
    try:
        assert ingestor.subscribed.wait(10)
        door = next(iter(doors))
        good = {
            "ts": WallClock().now_ms(),
            "seq": 1,
            "locked": True,
            "open": False,
            "rssi_dbm": -60,
            "temp_c": 20.0,
        }
        publisher.publish(f"sc/zjxc/door/{door}/telemetry", json.dumps(good), qos=1)
        publisher.publish(f"sc/zjxc/door/{door}/telemetry", b"{oops", qos=1)
        _wait(
            lambda: (
                ingestor.metrics.value("gridwatch_ingest_backlog") == 0
                and ingestor.metrics.value("gridwatch_ingest_written_total", kind="door") == 1
            )
        )
        ingestor.report.report()
    finally:
        ingestor.stop()
    stats = influx_db.query('SELECT * FROM "ingest_stats"')[0].records()[0]
    assert (stats["received"], stats["written"], stats["rejected"]) == (2, 1, 1)
    assert stats["instance"] == config.client_id and stats["influx_up"] is True
    rejected = influx_db.query('SELECT "count" FROM "ingest_rejected" GROUP BY "reason"')
    assert {s.tags["reason"]: s.values[0][1] for s in rejected} == {"bad_json": 1}
    positions = influx_db.query('SELECT count("lat") FROM "device_info"')
    assert positions[0].values[0][1] == len(doors)
