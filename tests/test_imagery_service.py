"""The imagery service against the real broker and SQL: snapshots in, files, rows and events out.

Every image travels the whole path: published over MQTT by a test client as a
robot would, received by the service's persistent session, checked, blurred,
stored as files and rows, and what it owes (checkpoint evidence, camera
faults) published back and read by a second client.
"""

from __future__ import annotations

import importlib.metadata
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from alerts.directory import load_directory
from alerts.engine import Engine, default_rules
from alerts.models import Alert
from alerts.service import AlertProcessor
from alerts.sql import Database
from broker.address import BrokerAddress
from broker.subscriber import Delivery
from gridwatch.clock import WallClock
from gridwatch.settings import Settings
from imagery.checkpoints import checkpoint_qr_text
from imagery.events import camera_topic
from imagery.files import ImageFiles, Variant, sha256_hex
from imagery.main import MqttPublisher
from imagery.models import RobotCamera, Snapshot, SnapshotRejection
from imagery.pipeline import Limits, Processed
from imagery.quality import QualityThresholds
from imagery.service import ImageryConfig, ImageryService, Unavailable
from imagery.store import alerts_for_snapshot, file_sha256, find_snapshot, snapshots_for_alert
from imagery.synthetic import Condition, synthetic_snapshot
from ingest.directory import StaticDevices
from ingest.main import RegistryDevices
from registry.db import make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_file
from registry.models import Community
from registry.records import load_devices
from stack.servers import Mosquitto, Postgres

pytestmark = pytest.mark.integration

ROBOT = "zjxc-robot-1"
SNAPSHOT_TOPIC = f"sc/zjxc/patrol_robot/{ROBOT}/snapshot/{{}}"
EVENT_TOPIC = f"sc/zjxc/patrol_robot/{ROBOT}/event"
CP_02 = (36.811618, 118.057032)  # checkpoint cp-02 of route night-a in the demo community
WAIT_S = 30.0


def astronaut_jpeg() -> bytes:
    """scikit-image's astronaut photograph (a face), as a JPEG."""
    path = importlib.metadata.distribution("scikit-image").locate_file("skimage/data/astronaut.png")
    photo = cv2.imread(str(path))
    assert photo is not None, path
    return cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def decode(data: bytes) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return np.asarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), np.uint8)


def detection(snapshot_id: str, ts: int, lat: float, lon: float, **extra: Any) -> bytes:
    body = {
        "ts": ts,
        "seq": 7,
        "event": "detection",
        "scene": "loitering",
        "confidence": 0.9,
        "lat": lat,
        "lon": lon,
        "snapshot_id": snapshot_id,
        **extra,
    }
    return json.dumps(body).encode()


def wait_for(check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """Poll until ``check`` returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s")


def demo_registry(url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated database holding the demo community."""
    migrate(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        import_file(session, DEMO_COMMUNITY_FILE)
    yield sessions
    engine.dispose()


@pytest.fixture
def sql_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gridwatch.db'}"


@pytest.fixture
def sessions(sql_url: str) -> Iterator[sessionmaker[Session]]:
    yield from demo_registry(sql_url)


class Client:
    """A test MQTT client: publishes as the robot, and collects what the service publishes."""

    def __init__(self, broker: BrokerAddress, topics: list[str]) -> None:
        self.received: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex}")
        self._client.on_message = lambda c, u, m: self.received.put(
            (m.topic, json.loads(m.payload))
        )
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self._client.subscribe([(t, 1) for t in topics])
        assert self._subscribed.wait(10)

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(10)

    def next(
        self, timeout: float = WAIT_S, *, skip: Callable[[dict[str, Any]], bool] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The next message the service published (skipping the robot's own, ``seq`` ≠ 0)."""
        deadline = time.monotonic() + timeout
        while True:
            topic, body = self.received.get(timeout=max(0.01, deadline - time.monotonic()))
            if skip is None or not skip(body):
                return topic, body

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def from_robot(body: dict[str, Any]) -> bool:
    return body.get("source") != "imagery" and "device_id" not in body


@pytest.fixture
def running(
    mosquitto: Mosquitto, sessions: sessionmaker[Session], sql_url: str, tmp_path: Path
) -> Iterator[tuple[ImageryService, Client]]:
    """The service on the session's broker, and a client listening to what it publishes."""
    broker = BrokerAddress.from_url(mosquitto.url)
    name = f"imagery-{uuid.uuid4().hex[:8]}"
    config = ImageryConfig(broker=broker, client_id=name, evidence_every_s=0.5)
    publisher = MqttPublisher(broker, f"{name}-events")
    service = ImageryService(
        config,
        sessions,
        RegistryDevices(Settings(database_url=sql_url)),
        ImageFiles(tmp_path / "imagery"),
        publisher,
        WallClock(),
    )
    client = Client(broker, [EVENT_TOPIC, camera_topic("zjxc")])
    service.start()
    assert service.subscribed.wait(10)
    yield service, client
    service.stop()
    publisher.close()
    client.close()


def stored(sessions: sessionmaker[Session], snapshot_id: str) -> Snapshot | None:
    with sessions() as session:
        row = find_snapshot(session, ROBOT, snapshot_id)
        return row if row is not None and row.has_image else None


# --- the whole path ------------------------------------------------------------------------


def test_a_snapshot_is_checked_blurred_stored_and_described(
    running: tuple[ImageryService, Client], sessions: sessionmaker[Session]
) -> None:
    service, client = running
    ts = WallClock().now_ms() - 60_000
    photo = astronaut_jpeg()
    client.publish(EVENT_TOPIC, detection("s-face-1", ts, 36.8125, 118.0561))
    client.publish(SNAPSHOT_TOPIC.format("s-face-1"), photo)
    row = wait_for(lambda: stored(sessions, "s-face-1"))

    assert (row.community_id, row.at_ms, row.detection_ts, row.scene) == (
        "zjxc",
        ts,
        ts,
        "loitering",
    )
    assert (row.lat, row.lon, row.confidence) == (36.8125, 118.0561, 0.9)
    assert (row.width, row.height, row.original_bytes) == (512, 512, len(photo))
    assert row.faces >= 1 and row.flags == [] and row.qr_codes == []
    files = service.files
    original = files.path(Variant.ORIGINAL, row.original_sha256)
    assert original.read_bytes() == photo and row.original_sha256 == sha256_hex(photo)
    private = decode(
        files.path(Variant.PRIVACY, file_sha256(row, Variant.PRIVACY) or "").read_bytes()
    )
    # The photograph decoded and encoded again as the privacy version was, without blurring.
    same_losses = cv2.imencode(".jpg", decode(photo), [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
    reference = decode(same_losses.tobytes()).astype(int)
    face = (slice(60, 160), slice(175, 270))  # the astronaut's face
    assert np.abs(private[face] - reference[face]).mean() > 12
    corner = (slice(400, 512), slice(0, 100))  # flag and suit: nobody there
    assert np.abs(private[corner] - reference[corner]).mean() < 0.5
    thumb = decode(files.path(Variant.THUMBNAIL, row.thumbnail_sha256).read_bytes())
    assert thumb.shape == (320, 320, 3) == (row.thumbnail_height, row.thumbnail_width, 3)
    assert service.metrics.value("gridwatch_imagery_stored_total") == 1
    assert service.metrics.value("gridwatch_imagery_blurred_total", kind="face") >= 1

    # Delivered again (a crash before the ack): the same row, the same files, nothing new.
    service.handle(SNAPSHOT_TOPIC.format("s-face-1"), photo, WallClock().now_ms())
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Snapshot)) == 1
    assert len(list((files.root / "original").rglob("*.jpg"))) == 1


def test_a_checkpoint_plate_in_a_frame_is_evidence_the_coverage_rule_counts(
    running: tuple[ImageryService, Client], sessions: sessionmaker[Session]
) -> None:
    service, client = running
    now = WallClock().now_ms()
    plate = checkpoint_qr_text("zjxc", "night-a", "cp-02")
    client.publish(EVENT_TOPIC, detection("s-cp-2", now - 50_000, *CP_02))
    frame = synthetic_snapshot(2, "garbage_overflow", checkpoint_qr=plate)
    client.publish(SNAPSHOT_TOPIC.format("s-cp-2"), frame)
    topic, evidence = client.next(skip=from_robot)
    assert topic == EVENT_TOPIC
    assert evidence == {
        "ts": now - 50_000,
        "seq": 0,
        "event": "checkpoint",
        "checkpoint_id": "cp-02",
        "lat": CP_02[0],
        "lon": CP_02[1],
        "source": "imagery",
        "snapshot_id": "s-cp-2",
    }

    # The alerts engine takes it as it takes the robot's own checkpoint events.
    with sessions() as session:
        engine = Engine(default_rules(), load_directory(session))
    engine.handle(topic, json.dumps(evidence).encode(), now)
    coverage = [c for c in engine.take_changes() if c.rule == "robot.coverage" and c.key == ROBOT]
    assert coverage and coverage[0].state is not None
    assert list(coverage[0].state["passed"]) == ["cp-02"]

    # The image first, the detection later: the evidence waits for the detection's time.
    plate3 = checkpoint_qr_text("zjxc", "night-a", "cp-03")
    frame = synthetic_snapshot(3, "waterlogging", checkpoint_qr=plate3)
    client.publish(SNAPSHOT_TOPIC.format("s-cp-3"), frame)
    wait_for(lambda: stored(sessions, "s-cp-3"))
    assert client.received.empty()
    client.publish(EVENT_TOPIC, detection("s-cp-3", now - 20_000, 36.8131, 118.057032))
    _, later = client.next(skip=from_robot)
    assert (later["checkpoint_id"], later["ts"]) == ("cp-03", now - 20_000)

    # A plate of another community (or not on the robot's routes) is no evidence.
    foreign = checkpoint_qr_text("dgxq", "night-a", "cp-02")
    client.publish(EVENT_TOPIC, detection("s-cp-x", now - 10_000, *CP_02))
    frame = synthetic_snapshot(4, "loitering", checkpoint_qr=foreign)
    client.publish(SNAPSHOT_TOPIC.format("s-cp-x"), frame)
    row = wait_for(lambda: stored(sessions, "s-cp-x"))
    assert row.qr_codes == [foreign] and row.checkpoint_id is None and row.evidence is None
    assert service.metrics.value("gridwatch_imagery_checkpoints_total", outcome="foreign") == 1
    with pytest.raises(queue.Empty):
        client.next(timeout=1.0, skip=from_robot)


def test_hostile_snapshots_are_refused_counted_and_dead_lettered(
    running: tuple[ImageryService, Client], sessions: sessionmaker[Session]
) -> None:
    service, client = running
    good = astronaut_jpeg()
    bomb = bytearray(good)
    sof = good.index(b"\xff\xc0")
    bomb[sof + 5 : sof + 9] = (60_000).to_bytes(2, "big") * 2
    rng = np.random.default_rng(8)
    hostile = {
        "s-truncated": (good[: len(good) // 2], "truncated"),
        "s-png": (cv2.imencode(".png", decode(good))[1].tobytes(), "not_jpeg"),
        "s-random": (rng.bytes(20_000), "not_jpeg"),
        "s-3mib": (rng.bytes(3 * 2**20), "too_large"),
        "s-bomb": (bytes(bomb), "too_many_pixels"),
    }
    for snapshot_id, (payload, _) in hostile.items():
        client.publish(SNAPSHOT_TOPIC.format(snapshot_id), payload)
    client.publish("sc/zjxc/patrol_robot/zjxc-robot-9/snapshot/s-stranger", good)
    client.publish("sc/zjxc/patrol_robot/zjxc-door-b03-u2/snapshot/s-door", good)
    client.publish(SNAPSHOT_TOPIC.format("s-after"), good)  # the service is still there
    wait_for(lambda: stored(sessions, "s-after"))

    with sessions() as session:
        letters = {r.snapshot_id: r for r in session.scalars(select(SnapshotRejection))}
        assert session.scalar(select(func.count()).select_from(Snapshot)) == 1
    expected = {sid: reason for sid, (_, reason) in hostile.items()}
    expected |= {"s-stranger": "unknown_device", "s-door": "device_mismatch"}
    assert {sid: r.reason for sid, r in letters.items()} == expected
    assert letters["s-3mib"].size == 3 * 2**20
    assert letters["s-png"].head.startswith("89504e47")  # what it was: a PNG
    assert letters["s-bomb"].detail == "declares 60000×60000 (limit 16777216 pixels)"
    for reason in set(expected.values()):
        count = list(expected.values()).count(reason)
        assert service.metrics.value("gridwatch_imagery_rejected_total", reason=reason) == count


def test_repeated_bad_frames_raise_a_camera_fault_and_a_good_frame_clears_it(
    running: tuple[ImageryService, Client], sessions: sessionmaker[Session]
) -> None:
    service, client = running
    frames: list[tuple[str, Condition]] = [
        ("s-bad-1", "dark"),
        ("s-bad-2", "blurred"),
        ("s-bad-3", "dark"),
        ("s-bad-4", "dark"),
    ]
    for i, (snapshot_id, condition) in enumerate(frames):
        client.publish(
            SNAPSHOT_TOPIC.format(snapshot_id),
            synthetic_snapshot(i, "loitering", condition=condition),
        )
    topic, fault = client.next(skip=from_robot)
    assert topic == "sc/zjxc/imagery"
    assert fault["event"] == "camera_fault" and fault["device_id"] == ROBOT
    assert fault["bad_frames"] == 3
    assert fault["snapshot_ids"] == ["s-bad-1", "s-bad-2", "s-bad-3"]
    assert fault["flags"] == ["dark"] and fault["kind"] == "patrol_robot"
    wait_for(lambda: stored(sessions, "s-bad-4"))
    with pytest.raises(queue.Empty):  # still faulty: said once
        client.next(timeout=1.0, skip=from_robot)
    client.publish(SNAPSHOT_TOPIC.format("s-good"), synthetic_snapshot(9, "loitering"))
    _, ok = client.next(skip=from_robot)
    assert ok["event"] == "camera_ok" and ok["since_ms"] == fault["since_ms"]

    def cleared() -> bool:  # the event goes out just before its transaction commits
        with sessions() as session:
            camera = session.get(RobotCamera, ROBOT)
            return camera is not None and not camera.fault and camera.bad_streak == 0

    wait_for(cleared)
    assert service.metrics.value("gridwatch_imagery_flagged_total", flag="dark") == 3


# --- SQL: links to alerts and retention, on SQLite and PostgreSQL ------------------------------


class Recorded:
    """A publisher that keeps what it is given (the SQL tests need no broker)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))


@pytest.fixture(params=["sqlite", "postgresql"])
def any_sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """The demo registry on SQLite, then on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gridwatch.db'}"
    else:
        postgres: Postgres = request.getfixturevalue("postgres")
        url = postgres.create_database(f"imagery_{uuid.uuid4().hex[:8]}")
    yield from demo_registry(url)


def offline_service(sessions: sessionmaker[Session], root: Path) -> ImageryService:
    """A service that is never started: its handlers and housekeeping, called directly."""
    with sessions() as session:
        devices = {d.device_id: d for d in load_devices(session)}
    return ImageryService(
        ImageryConfig(broker=BrokerAddress.from_url("mqtt://127.0.0.1:9"), limits=Limits()),
        sessions,
        StaticDevices(devices),
        ImageFiles(root),
        Recorded(),
        WallClock(),
    )


def test_snapshots_link_to_the_scene_alert_they_belong_to(
    any_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    sessions = any_sessions
    service = offline_service(sessions, tmp_path / "imagery")
    service.reload_communities()
    alerts = AlertProcessor(
        Database(sessions), base_url="https://gw.test", wall=WallClock(), escalate_after_ms=900_000
    )
    now = WallClock().now_ms()
    spot = (36.8125, 118.0561)
    # Two detections of one scene 20 m and 5 min apart (one alert), a third of another scene.
    detections = [
        ("s-1", now - 600_000, spot, {}),
        ("s-2", now - 300_000, (spot[0] + 0.00018, spot[1]), {}),
        ("s-3", now - 200_000, spot, {"scene": "smoke_fire"}),
    ]
    for i, (snapshot_id, ts, (lat, lon), extra) in enumerate(detections):
        payload = detection(snapshot_id, ts, lat, lon, **extra)
        alerts.process([(EVENT_TOPIC, payload, ts)])
        service.handle(EVENT_TOPIC, payload, ts)
        service.handle(SNAPSHOT_TOPIC.format(snapshot_id), synthetic_snapshot(i, "loitering"), ts)
    with sessions() as session:
        scene, fire = session.scalars(
            select(Alert).where(Alert.rule == "robot.scene").order_by(Alert.id)
        ).all()
        assert (scene.facts["snapshot_id"], scene.occurrences) == ("s-1", 2)
        assert [s.snapshot_id for s in snapshots_for_alert(session, scene)] == ["s-1", "s-2"]
        assert [s.snapshot_id for s in snapshots_for_alert(session, fire)] == ["s-3"]
        for snapshot_id, alert in (("s-1", scene), ("s-2", scene), ("s-3", fire)):
            row = find_snapshot(session, ROBOT, snapshot_id)
            assert row is not None
            assert [a.id for a in alerts_for_snapshot(session, row)] == [alert.id]


def test_retention_deletes_old_rows_and_their_files_per_community(
    any_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    sessions = any_sessions
    service = offline_service(sessions, tmp_path / "imagery")
    with sessions.begin() as session:
        community = session.get(Community, "zjxc")
        assert community is not None
        community.settings = {**community.settings, "imagery": {"retention_days": 2}}
    service.reload_communities()
    now = WallClock().now_ms()
    day = 86_400_000
    shared = synthetic_snapshot(1, "smoke_fire")  # sent twice: one file, two rows
    for snapshot_id, age_days, image in (
        ("s-old", 3, shared),
        ("s-new", 1, shared),
        ("s-old-only", 3, synthetic_snapshot(2, "waterlogging")),
    ):
        ts = now - age_days * day
        service.handle(EVENT_TOPIC, detection(snapshot_id, ts, *CP_02), ts)
        service.handle(SNAPSHOT_TOPIC.format(snapshot_id), image, ts)
    service.handle(SNAPSHOT_TOPIC.format("s-junk"), b"junk", now - 3 * day)  # a dead letter
    with sessions() as session:
        old_only = find_snapshot(session, ROBOT, "s-old-only")
        assert old_only is not None and old_only.original_sha256 is not None
        old_file = service.files.path(Variant.ORIGINAL, old_only.original_sha256)
    shared_file = service.files.path(Variant.ORIGINAL, sha256_hex(shared))
    assert old_file.exists() and shared_file.exists()

    assert service.enforce_retention() == 2
    with sessions() as session:
        left = session.scalars(select(Snapshot.snapshot_id)).all()
        assert left == ["s-new"]
        assert session.scalar(select(func.count()).select_from(SnapshotRejection)) == 0
    assert not old_file.exists()  # nobody refers to it any more
    assert shared_file.exists()  # s-new still does
    assert service.enforce_retention() == 0


def test_a_snapshot_that_cannot_be_written_is_held_not_dropped(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """The image directory unusable (here: a file where a directory should be): retry later."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    service = offline_service(sessions, blocker / "imagery")
    with pytest.raises(Unavailable, match="cannot write the image files"):
        service.handle(SNAPSHOT_TOPIC.format("s-held"), synthetic_snapshot(1, "loitering"), 0)
    with sessions() as session:
        assert find_snapshot(session, ROBOT, "s-held") is None
        assert session.scalar(select(func.count()).select_from(SnapshotRejection)) == 0


def test_a_batch_is_stored_whole_and_a_message_that_breaks_the_code_costs_only_itself(
    sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's batch: files synced and rows committed once; a bug drops one message only."""
    service = offline_service(sessions, tmp_path / "imagery")
    poison = synthetic_snapshot(99, "smoke_fire")
    process = service._processor.process

    def process_or_break(data: bytes, thresholds: QualityThresholds | None = None) -> Processed:
        if data == poison:
            raise RuntimeError("a bug")
        return process(data, thresholds)

    monkeypatch.setattr(service._processor, "process", process_or_break)
    now = WallClock().now_ms()
    messages = [
        (EVENT_TOPIC, detection("s-batch-1", now, *CP_02)),
        (SNAPSHOT_TOPIC.format("s-batch-1"), synthetic_snapshot(1, "loitering")),
        (SNAPSHOT_TOPIC.format("s-poison"), poison),
        (SNAPSHOT_TOPIC.format("s-junk"), b"junk"),
        (SNAPSHOT_TOPIC.format("s-batch-2"), synthetic_snapshot(2, "loitering")),
    ]
    batch = [Delivery(t, p, 1, i + 1, False, 0) for i, (t, p) in enumerate(messages)]
    assert service._handle_with_retries(batch)

    for snapshot_id in ("s-batch-1", "s-batch-2"):
        row = stored(sessions, snapshot_id)
        assert row is not None
        for variant in Variant:
            sha = file_sha256(row, variant)
            assert sha is not None and service.files.path(variant, sha).is_file()
    first = stored(sessions, "s-batch-1")
    assert first is not None and first.detection_ts == now
    assert stored(sessions, "s-poison") is None
    with sessions() as session:
        letters = session.scalars(select(SnapshotRejection.snapshot_id)).all()
    assert letters == ["s-junk"]
    assert service.metrics.value("gridwatch_imagery_rejected_total", reason="internal_error") == 1
    assert service.metrics.value("gridwatch_imagery_stored_total") == 2


def test_retention_is_30_days_by_default_and_runs_as_the_service_starts(
    mosquitto: Mosquitto, sessions: sessionmaker[Session], sql_url: str, tmp_path: Path
) -> None:
    """A community without settings.imagery keeps 30 days; a service down for days catches up."""
    root = tmp_path / "imagery"
    earlier = offline_service(sessions, root)
    now = WallClock().now_ms()
    for snapshot_id, age_days in (("s-31d", 31), ("s-29d", 29)):
        ts = now - age_days * 86_400_000
        earlier.handle(EVENT_TOPIC, detection(snapshot_id, ts, *CP_02), ts)
        earlier.handle(
            SNAPSHOT_TOPIC.format(snapshot_id), synthetic_snapshot(age_days, "smoke_fire"), ts
        )
    broker = BrokerAddress.from_url(mosquitto.url)
    publisher = MqttPublisher(broker, f"retention-{uuid.uuid4().hex[:8]}")
    service = ImageryService(
        ImageryConfig(broker=broker, client_id=f"retention-{uuid.uuid4().hex[:8]}"),
        sessions,
        RegistryDevices(Settings(database_url=sql_url)),
        ImageFiles(root),
        publisher,
        WallClock(),
    )
    service.start()
    try:

        def kept() -> list[str] | None:
            with sessions() as session:
                ids = list(session.scalars(select(Snapshot.snapshot_id)))
            return ids if ids == ["s-29d"] else None

        wait_for(kept)
        assert service.metrics.value("gridwatch_imagery_expired_total") == 1
    finally:
        service.stop()
        publisher.close()
