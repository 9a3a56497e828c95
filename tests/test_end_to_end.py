"""The whole path for real: simulated demo community -> Mosquitto -> ingest -> influxd.

Two simulated hours of all 342 devices of 张家新村 are published flat out at
QoS 1; every message published must be one point in InfluxDB (per kind and
channel: a patrol robot's snapshot, too, is one point of its arrival, its image
being the imagery service's), and the bad messages injected on purpose must be
counted by reason and stored nowhere.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.address import BrokerAddress
from devices import KINDS
from devices.contract import Channel, Community, DeviceRecord
from devices.patrol_robot.simulate import SimulatedPatrolRobot
from gridwatch.clock import SimulatedClock, WallClock
from influx.client import InfluxClient
from ingest.decode import Reason
from ingest.directory import StaticDevices
from ingest.service import IngestConfig, Ingestor
from registry.db import make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_file
from registry.records import load_communities, load_devices
from simulators.engine import Report, Simulation
from simulators.faults import sim_as
from simulators.fleet import Fleet
from stack.servers import Mosquitto
from tests.ingest_harness import stored as stored_points
from tests.ingest_harness import wait_ingested

pytestmark = pytest.mark.integration

SIMULATED_HOURS = 2


@pytest.fixture()
def broker(stack_root: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own: no retained messages from other tests."""
    with Mosquitto(stack_root / f"mosquitto-e2e-{uuid.uuid4().hex[:8]}") as server:
        yield server


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Community], list[DeviceRecord]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'gridwatch.db'}"
    migrate(url)
    with make_sessionmaker(make_engine(url))() as session:
        import_file(session, DEMO_COMMUNITY_FILE)
        session.commit()
        return load_communities(session), load_devices(session)


def _simulate(
    broker: BrokerAddress, communities: list[Community], devices: list[DeviceRecord]
) -> Report:
    now = WallClock().now_ms()
    clock = SimulatedClock(now - SIMULATED_HOURS * 3_600_000, speed=0)
    fleet = Fleet(broker, qos=1)
    simulation = Simulation(communities, devices, clock=clock, seed=7, transport=fleet)
    fleet.on_command = simulation.queue_command
    # A robot detects only while it patrols, by night: one detection each, whatever the
    # time of day, so that snapshots (the frame behind a detection) are always counted.
    for d in devices:
        if d.kind == "patrol_robot":
            robot = sim_as(simulation.device(d.device_id), SimulatedPatrolRobot)
            detect = partial(robot.detect, scene="smoke_fire", confidence=0.9)
            simulation.schedule(now - 1_800_000, d.device_id, detect)
    for d in devices:
        fleet.add(d.device_id, d.community, d.kind)
    fleet.wait_connected()
    simulation.announce(online=True)
    simulation.run(now, threading.Event())
    simulation.announce(online=False)
    assert fleet.flush(120), f"{fleet.unconfirmed} messages never confirmed by the broker"
    fleet.close()
    return simulation.report


def _inject_bad_messages(broker: BrokerAddress, door: DeviceRecord) -> dict[Reason, int]:
    """Publish one of each kind of bad message; return how many of each reason to expect."""
    now = WallClock().now_ms()
    good = {"ts": now, "seq": 1, "locked": True, "open": False, "rssi_dbm": -70, "temp_c": 18.0}
    topic = f"sc/{door.community}/door/{door.device_id}/telemetry"
    bad: list[tuple[str, bytes, Reason]] = [
        (topic, b'{"ts": 1, "seq":', Reason.BAD_JSON),
        (topic, b"\x00\xff garbage", Reason.BAD_JSON),
        (topic, json.dumps({**good, "locked": "yes"}).encode(), Reason.SCHEMA),
        (topic, json.dumps({**good, "rssi_dbm": 10**30}).encode(), Reason.SCHEMA),
        (topic, b'{"pad": "' + b"x" * 20_000 + b'"}', Reason.TOO_LARGE),
        (topic, json.dumps({**good, "ts": now + 3_600_000}).encode(), Reason.TS_FUTURE),
        ("sc/zjxc/door/intruder-1/telemetry", json.dumps(good).encode(), Reason.UNKNOWN_DEVICE),
        (
            f"sc/zjxc/streetlight/{door.device_id}/telemetry",
            json.dumps(good).encode(),
            Reason.DEVICE_MISMATCH,
        ),
        ('sc/zjxc/door/a"b,c=d e/telemetry', json.dumps(good).encode(), Reason.BAD_TOPIC),
        ("sc/zjxc/door/x/telemetry/../../evil", json.dumps(good).encode(), Reason.BAD_TOPIC),
    ]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="e2e-injector")
    client.connect(broker.host, broker.port)
    client.loop_start()
    for t, payload, _ in bad:
        client.publish(t, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    expected: dict[Reason, int] = {}
    for _, _, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    return expected


def test_demo_community_end_to_end(
    broker: Mosquitto,
    influx_db: InfluxClient,
    demo: tuple[list[Community], list[DeviceRecord]],
) -> None:
    communities, devices = demo
    address = BrokerAddress.from_url(broker.url)
    by_id = {d.device_id: d for d in devices}
    ingestor = Ingestor(
        IngestConfig(broker=address, client_id="e2e-ingest"),
        influx_db,
        StaticDevices(by_id),
        WallClock(),
    )
    ingestor.start()
    try:
        assert ingestor.subscribed.wait(10), "ingest never subscribed"
        started = time.monotonic()
        report = _simulate(address, communities, devices)
        published_s = time.monotonic() - started
        door = next(d for d in devices if d.kind == "door")
        expected_rejections = _inject_bad_messages(address, door)
        expected_total = report.total + sum(expected_rejections.values())
        metrics = ingestor.metrics
        wait_ingested(metrics, expected_total)
        stored_s = time.monotonic() - started
    finally:
        ingestor.stop()

    print(f"\nsimulated {SIMULATED_HOURS} h of {len(devices)} devices: {report.total} messages")
    print(f"published in {published_s:.1f} s, all stored after {stored_s:.1f} s")
    for (kind, channel), n in sorted(report.counts.items()):
        stored = stored_points(influx_db, kind, Channel(channel))
        print(f"  {kind:13} {channel:10} published {n:6}  stored {stored:6}")
        assert stored == n, (kind, channel)
    assert {k for k, _ in report.counts} == set(KINDS)
    assert report.counts[("patrol_robot", Channel.SNAPSHOT.value)] > 0

    for reason, n in expected_rejections.items():
        counted = sum(
            metrics.value("gridwatch_ingest_rejected_total", reason=reason.value, kind=k)
            for k in [*KINDS, "unknown"]
        )
        assert counted == n, reason
    dead = influx_db.query('SELECT count("size") FROM "dead_letter" GROUP BY "reason"')
    assert {s.tags["reason"]: s.values[0][1] for s in dead} == {
        r.value: n for r, n in expected_rejections.items()
    }
    # Nothing bad was stored and no series appeared for devices that are not registered.
    for kind in KINDS:
        registered = {d.device_id for d in devices if d.kind == kind}
        assert _device_ids(influx_db, kind) == registered, kind


def _device_ids(influx: InfluxClient, measurement: str) -> set[str]:
    series = influx.query(f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "device_id"')
    return {row[1] for row in series[0].values} if series else set()
