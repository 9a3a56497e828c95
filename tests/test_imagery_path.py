"""The whole imagery path on the real broker: simulated robot → Mosquitto → imagery → SQL → alerts.

The robot simulator plays ``simulators/scenarios/robot_camera.yaml`` over its
own MQTT connection, flat out: three detections whose frames are obstructed,
then a good one. The imagery service stores all four (files and rows, with
their detection), finds the camera faulty after the third and well again at
the fourth, and says so on ``sc/zjxc/imagery``; the alerts service opens the
``robot.camera`` alert and resolves it, and its notifications link to the
last bad frame's privacy image. Scene alerts link to their frame too.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from alerts.models import Alert, AlertNotification
from alerts.service import AlertProcessor, AlertsConfig, AlertService
from alerts.sql import Database
from broker.address import BrokerAddress
from devices.contract import Channel, device_topic
from gridwatch.clock import SimulatedClock, WallClock
from gridwatch.settings import Settings
from imagery.files import ImageFiles, Variant
from imagery.main import MqttPublisher
from imagery.models import RobotCamera, Snapshot
from imagery.service import ImageryConfig, ImageryService
from imagery.store import find_snapshot
from imagery.synthetic import synthetic_snapshot
from ingest.decode import Rejected
from ingest.main import RegistryDevices
from registry.records import load_communities, load_devices
from simulators.engine import Simulation
from simulators.fleet import Fleet
from simulators.scenario import SCENARIOS_DIR, load_scenario
from stack.servers import Mosquitto
from tests.test_imagery_service import (
    EVENT_TOPIC,
    ROBOT,
    SNAPSHOT_TOPIC,
    demo_registry,
    detection,
    offline_service,
    wait_for,
)

pytestmark = pytest.mark.integration

BASE_URL = "https://gw.test"


@pytest.fixture
def sql_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gridwatch.db'}"


@pytest.fixture
def sessions(sql_url: str) -> Iterator[sessionmaker[Session]]:
    yield from demo_registry(sql_url)


@pytest.fixture
def services(
    mosquitto: Mosquitto, sessions: sessionmaker[Session], sql_url: str, tmp_path: Path
) -> Iterator[ImageryService]:
    """The imagery and alerts services on the session's broker, each with its own session."""
    broker = BrokerAddress.from_url(mosquitto.url)
    name = f"path-{uuid.uuid4().hex[:8]}"
    publisher = MqttPublisher(broker, f"{name}-imagery-events")
    imagery = ImageryService(
        ImageryConfig(broker=broker, client_id=f"{name}-imagery"),
        sessions,
        RegistryDevices(Settings(database_url=sql_url)),
        ImageFiles(tmp_path / "imagery"),
        publisher,
        WallClock(),
    )
    alerts = AlertService(
        AlertsConfig(broker=broker, client_id=f"{name}-alerts", base_url=BASE_URL, flush_ms=20),
        Database(sessions),
        influx=None,
    )
    imagery.start()
    alerts.start()
    assert imagery.subscribed.wait(10) and alerts.subscribed.wait(10)
    yield imagery
    alerts.stop()
    imagery.stop()
    publisher.close()


def play_on_the_broker(sessions: sessionmaker[Session], broker_url: str, scenario: str) -> int:
    """Play a shipped scenario's robot flat out over MQTT, ending a minute ago; its start."""
    played = load_scenario(SCENARIOS_DIR / scenario)
    with sessions() as session:
        communities = [c for c in load_communities(session) if c.id == played.community]
        robots = [d for d in load_devices(session) if d.device_id == ROBOT]
    start, end = played.window(WallClock().now_ms() - 60_000, communities[0])
    fleet = Fleet(BrokerAddress.from_url(broker_url), qos=1)
    simulation = Simulation(
        communities, robots, clock=SimulatedClock(start, 0), seed=played.seed, transport=fleet
    )
    played.apply(simulation)
    fleet.add(ROBOT, played.community, "patrol_robot")
    fleet.wait_connected()
    simulation.announce(online=True)
    simulation.run(end, threading.Event())
    # The broker is shared: an empty retained status leaves no robot behind for the
    # next tests' subscribers (ingest's self-report counts what it receives).
    status = device_topic(played.community, "patrol_robot", ROBOT, Channel.STATUS)
    fleet.publish(ROBOT, status, b"", retain=True)
    assert fleet.flush(30), "the broker did not take every message"
    fleet.close()
    return start


def rows(sessions: sessionmaker[Session]) -> list[Snapshot]:
    with sessions() as session:
        return list(session.scalars(select(Snapshot).order_by(Snapshot.at_ms)))


def test_simulated_frames_are_stored_and_a_covered_camera_raises_and_clears_its_alert(
    services: ImageryService, sessions: sessionmaker[Session], mosquitto: Mosquitto
) -> None:
    imagery = services
    play_on_the_broker(sessions, mosquitto.url, "robot_camera.yaml")

    def all_four_and_well_again() -> list[Snapshot] | None:
        stored = [r for r in rows(sessions) if r.has_image and r.detection_ts is not None]
        with sessions() as session:
            camera = session.get(RobotCamera, ROBOT)
            well = camera is not None and not camera.fault
        return stored if len(stored) == 4 and well else None

    frames = wait_for(all_four_and_well_again, timeout=60)
    assert [f.scene for f in frames] == [
        "garbage_overflow",
        "garbage_overflow",
        "waterlogging",
        "waterlogging",
    ]
    assert [f.flags for f in frames] == [["obstructed"]] * 3 + [[]]
    for frame in frames:
        assert frame.at_ms == frame.detection_ts and frame.confidence == 0.5
        assert (frame.width, frame.height) == (640, 480)
        for variant in Variant:
            sha = getattr(frame, f"{variant.value}_sha256")
            assert imagery.files.path(variant, sha).is_file()
    assert imagery.metrics.value("gridwatch_imagery_camera_events_total", event="camera_fault") == 1

    def camera_alert() -> Alert | None:
        with sessions() as session:
            alert = session.scalar(select(Alert).where(Alert.rule == "robot.camera"))
            return alert if alert is not None and alert.status == "resolved" else None

    alert = wait_for(camera_alert)
    bad = [f.snapshot_id for f in frames[:3]]
    assert alert.device_id == ROBOT and alert.severity == "major"
    assert alert.facts["snapshot_ids"] == bad and alert.facts["flags"] == ["obstructed"]
    assert alert.title == "巡逻车摄像头故障（镜头遮挡，连续3张）"
    assert alert.since_ms == frames[2].at_ms
    with sessions() as session:
        opened = session.scalars(
            select(AlertNotification).where(
                AlertNotification.alert_id == alert.id, AlertNotification.channel == "webhook"
            )
        ).first()
        assert opened is not None
        last_bad = find_snapshot(session, ROBOT, bad[-1])
        assert last_bad is not None
    link = f"{BASE_URL}/api/v1/snapshots/{last_bad.id}/privacy.jpg?expires="  # signed
    assert opened.content["event"]["snapshot_link"].startswith(link)


def test_a_scene_alert_links_to_its_frame_whichever_service_comes_first(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """The alerts service may write the alert before the imagery service hears of the frame."""
    processor = AlertProcessor(
        Database(sessions), base_url=BASE_URL, wall=WallClock(), escalate_after_ms=900_000
    )
    ts = WallClock().now_ms() - 60_000
    processor.process([(EVENT_TOPIC, detection("s-first", ts, 36.8125, 118.0561), ts)])
    with sessions() as session:
        reserved = find_snapshot(session, ROBOT, "s-first")
        assert reserved is not None and not reserved.has_image
        alert = session.scalars(select(Alert).where(Alert.rule == "robot.scene")).one()
        contents = [
            n.content
            for n in session.scalars(
                select(AlertNotification).where(AlertNotification.alert_id == alert.id)
            )
        ]
    # One content for every channel: Markdown (WeCom, DingTalk), text (SMS), event (webhook, MQTT).
    assert contents and all(c == contents[0] for c in contents)
    content = contents[0]
    link = content["event"]["snapshot_link"]
    assert link.startswith(f"{BASE_URL}/api/v1/snapshots/{reserved.id}/privacy.jpg?expires=")
    assert f"[查看现场抓拍（已打码）]({link})" in content["markdown"]
    assert content["text"].endswith(f"抓拍：{link}")
    # Then the imagery service hears of the detection and the frame: the same row.
    imagery = offline_service(sessions, tmp_path / "imagery")
    imagery.handle(EVENT_TOPIC, detection("s-first", ts, 36.8125, 118.0561), ts)
    imagery.handle(SNAPSHOT_TOPIC.format("s-first"), synthetic_snapshot(1, "loitering"), ts)
    with sessions() as session:
        row = find_snapshot(session, ROBOT, "s-first")
        assert row is not None and row.id == reserved.id and row.has_image
        assert row.detection_ts == ts and row.scene == "loitering"


def test_camera_reports_that_do_not_hold_are_rejected_and_raise_nothing(
    sessions: sessionmaker[Session],
) -> None:
    processor = AlertProcessor(
        Database(sessions), base_url=BASE_URL, wall=WallClock(), escalate_after_ms=900_000
    )
    ts = WallClock().now_ms() - 60_000
    good = {
        "event": "camera_fault",
        "ts": ts,
        "community": "zjxc",
        "kind": "patrol_robot",
        "device_id": ROBOT,
        "since_ms": ts,
        "bad_frames": 3,
        "snapshot_ids": ["s-1", "s-2", "s-3"],
        "flags": ["dark"],
    }
    hostile = [
        ("sc/zjxc/imagery", b"\xff\xd8 not json"),
        ("sc/zjxc/imagery", json.dumps({**good, "event": "camera_gone"}).encode()),
        ("sc/zjxc/imagery", json.dumps({**good, "snapshot_ids": ["a/b"]}).encode()),
        ("sc/zjxc/imagery", json.dumps({**good, "snapshot_ids": ["s"] * 17}).encode()),
        ("sc/zjxc/imagery", json.dumps({**good, "device_id": "zjxc-robot-9"}).encode()),
        ("sc/zjxc/imagery", json.dumps({**good, "device_id": "zjxc-door-b03-u2"}).encode()),
        ("sc/other/imagery", json.dumps(good).encode()),
    ]
    outcomes = [processor.engine.handle(topic, payload, ts) for topic, payload in hostile]
    assert [o.reason.value for o in outcomes if isinstance(o, Rejected)] == [
        "schema",
        "schema",
        "schema",
        "schema",
        "unknown_device",
        "device_mismatch",
        "device_mismatch",
    ]
    assert processor.engine.outcomes["rejected"] == len(hostile)
    processor.process([("sc/zjxc/imagery", json.dumps(good).encode(), ts)])
    with sessions() as session:
        alerts = session.scalars(select(Alert)).all()
    assert [(a.rule, a.device_id) for a in alerts] == [("robot.camera", ROBOT)]


def test_a_late_camera_report_is_no_sign_of_life_from_the_robot(
    sessions: sessionmaker[Session],
) -> None:
    """The robot drops off; a backlog of its frames yields camera reports afterwards."""
    processor = AlertProcessor(
        Database(sessions), base_url=BASE_URL, wall=WallClock(), escalate_after_ms=900_000
    )
    ts = WallClock().now_ms() - 600_000
    status = f"sc/zjxc/patrol_robot/{ROBOT}/status"
    processor.process([(status, b'{"online": false}', ts)])
    report = {
        "event": "camera_fault",
        "ts": ts - 60_000,
        "community": "zjxc",
        "kind": "patrol_robot",
        "device_id": ROBOT,
        "since_ms": ts - 60_000,
        "bad_frames": 3,
        "snapshot_ids": ["s-1", "s-2", "s-3"],
    }
    processor.process([("sc/zjxc/imagery", json.dumps(report).encode(), ts + 1000)])
    with sessions() as session:
        alerts = {a.rule: a.status for a in session.scalars(select(Alert))}
    assert alerts == {"device.offline": "open", "robot.camera": "open"}
