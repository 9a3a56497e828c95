"""Snapshot endpoints against the real servers, with real JPEGs stored as the imagery service does.

The demo's robot ``zjxc-robot-1`` stands in grid g2. Snapshot A is behind a
robot.scene alert routed to grid g1, snapshot B belongs to no alert, and C is a
detection whose image has not arrived. The worker of g1 therefore sees A (through
its alert) and not B; a worker of g2 sees all the robot's snapshots.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.engine import default_rules
from alerts.export import MEASUREMENT, TransitionExporter
from alerts.main import act_on_alert
from alerts.models import AlertNotification
from alerts.routing import Router
from alerts.store import AlertStore
from api.app import create_app
from devices.patrol_robot.schema import Detection
from gridwatch.clock import WallClock
from gridwatch.settings import Settings
from imagery.files import ImageFiles, Variant, sha256_hex
from imagery.links import SnapshotLinks
from imagery.pipeline import Processor
from imagery.store import StoredFiles, record_detection, record_image
from imagery.synthetic import synthetic_snapshot
from influx.client import InfluxClient
from registry.db import make_engine, make_sessionmaker
from registry.records import get_device
from stack.servers import Influxd, Mosquitto
from tests.test_api import Api, add_alert, demo_registry, login, make_settings, open_api

pytestmark = pytest.mark.integration

ROBOT = "zjxc-robot-1"
HOUR_MS = 3_600_000
JPEG_MAGIC = b"\xff\xd8"


@dataclass
class Stored:
    """One stored snapshot: its row id and the bytes of each file."""

    id: int
    files: dict[Variant, bytes]


@dataclass
class Snapshots:
    """The API, the stored snapshots by letter, and the alert behind A."""

    api: Api
    rows: dict[str, Stored]
    alert_id: int
    imagery: Path
    settings: Settings


@contextmanager
def transaction(sql_url: str) -> Iterator[Session]:
    """A write transaction on an engine of its own, disposed of (PostgreSQL's connections too)."""
    engine = make_engine(sql_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


def store_snapshot(
    sql_url: str, files: ImageFiles, snapshot_id: str, scene: str, ts: int
) -> Stored:
    """A detection and its image, through imagery's own processing and store."""
    original = synthetic_snapshot(len(snapshot_id) + ts % 97, scene)
    processed = Processor().process(original)
    stored = StoredFiles(
        files.put(Variant.ORIGINAL, original),
        files.put(Variant.PRIVACY, processed.privacy.data),
        files.put(Variant.THUMBNAIL, processed.thumbnail.data),
    )
    with transaction(sql_url) as session:
        device = get_device(session, ROBOT)
        assert device is not None
        detection = _detection(snapshot_id, scene, ts)
        record_detection(session, device, detection)
        row, _ = record_image(
            session,
            device,
            snapshot_id,
            processed,
            stored,
            original_bytes=len(original),
            received_ms=ts + 500,
            checkpoint=None,
        )
        session.flush()
        row_id = row.id
    return Stored(
        row_id,
        {
            Variant.ORIGINAL: original,
            Variant.PRIVACY: processed.privacy.data,
            Variant.THUMBNAIL: processed.thumbnail.data,
        },
    )


def _detection(snapshot_id: str, scene: str, ts: int) -> Detection:
    return Detection(
        ts=ts,
        seq=1,
        scene=scene,  # type: ignore[arg-type]
        confidence=0.9,
        lat=36.811887,
        lon=118.053554,
        snapshot_id=snapshot_id,
    )


def detection_only(sql_url: str, snapshot_id: str, ts: int) -> int:
    """A detection whose image has not arrived."""
    with transaction(sql_url) as session:
        device = get_device(session, ROBOT)
        assert device is not None
        row = record_detection(session, device, _detection(snapshot_id, "smoke_fire", ts))
        session.flush()
        return row.id


def scene_alert(sql_url: str, grid: str, snapshot_id: str, ts: int) -> int:
    """A robot.scene alert naming ``snapshot_id``, routed to ``grid`` (by name)."""
    return add_alert(
        sql_url,
        grid,
        ROBOT,
        rule="robot.scene",
        kind="patrol_robot",
        subject=f"fire_lane_blocked@{snapshot_id}",
        severity="major",
        title="消防通道占用",
        lat=36.811887,
        lon=118.053554,
        facts={"scene": "fire_lane_blocked", "snapshot_id": snapshot_id},
        open_key=f"robot.scene|{snapshot_id}",
        since_ms=ts,
        opened_ms=ts,
        last_ms=ts,
    )


@pytest.fixture
def snaps(
    tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, influx_db: InfluxClient
) -> Iterator[Snapshots]:
    sql_url = demo_registry(tmp_path)
    imagery = tmp_path / "imagery"
    files = ImageFiles(imagery)
    now = WallClock().now_ms()
    rows = {
        "A": store_snapshot(sql_url, files, "s-a", "fire_lane_blocked", now - HOUR_MS),
        "B": store_snapshot(sql_url, files, "s-b", "garbage_overflow", now - 3 * HOUR_MS),
        "C": Stored(detection_only(sql_url, "s-c", now - 2 * HOUR_MS), {}),
    }
    alert_id = scene_alert(sql_url, "第一网格", "s-a", now - HOUR_MS)
    settings = make_settings(mosquitto, influxd, influx_db, sql_url, imagery_dir=str(imagery))
    with TestClient(create_app(settings)) as client:
        api = open_api(client, sql_url, influx_db)
        created = client.post(
            "/api/v1/users",
            json={
                "username": "worker2",
                "password": "worker2-password",
                "role": "grid_worker",
                "community": "zjxc",
                "grids": [api.grids["g2"]],
            },
            headers=api.headers["admin"],
        )
        assert created.status_code == 201, created.text
        api.headers["worker2"] = login(client, "worker2", "worker2-password")
        yield Snapshots(api, rows, alert_id, imagery, settings)


def listed(s: Snapshots, role: str, **params: str) -> list[str]:
    """The snapshot ids a role's list shows (newest first)."""
    response = s.api.get(role, "/api/v1/snapshots", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])
    return [item["snapshot_id"] for item in body["items"]]


def test_the_list_is_scoped_like_alerts_and_newest_first(snaps: Snapshots) -> None:
    for role in ("admin", "operator", "viewer", "worker2"):
        assert listed(snaps, role) == ["s-a", "s-c", "s-b"], role
    # The worker of g1 sees A through its alert only: the robot is in g2.
    assert listed(snaps, "worker") == ["s-a"]


def test_the_list_filters_by_community_robot_scene_and_time(snaps: Snapshots) -> None:
    c = snaps.api.get("admin", f"/api/v1/snapshots/{snaps.rows['C'].id}").json()["at_ms"]
    assert listed(snaps, "admin", community="zjxc", device_id=ROBOT) == ["s-a", "s-c", "s-b"]
    assert listed(snaps, "admin", scene="garbage_overflow") == ["s-b"]
    assert listed(snaps, "admin", since_ms=str(c)) == ["s-a", "s-c"]
    assert listed(snaps, "admin", until_ms=str(c)) == ["s-b"]
    assert listed(snaps, "admin", device_id="zjxc-door-b01-u1") == []
    assert listed(snaps, "admin", community="other") == []
    assert snaps.api.get("operator", "/api/v1/snapshots?community=other").status_code == 403
    for bad in ("device_id=x%27%20OR%201%3D1", "since_ms=-1", "scene=A;DROP", "limit=501"):
        assert snaps.api.get("admin", f"/api/v1/snapshots?{bad}").status_code == 422, bad


def test_metadata_names_the_images_each_role_may_fetch(snaps: Snapshots) -> None:
    a = snaps.rows["A"].id
    admin = snaps.api.get("admin", f"/api/v1/snapshots/{a}").json()
    assert admin["scene"] == "fire_lane_blocked" and admin["alert_ids"] == [snaps.alert_id]
    assert admin["width"] == 640 and admin["height"] == 480
    assert admin["original_url"] == f"/api/v1/snapshots/{a}/original.jpg"
    assert admin["privacy_url"] == f"/api/v1/snapshots/{a}/privacy.jpg"
    operator = snaps.api.get("operator", f"/api/v1/snapshots/{a}").json()
    assert operator["original_url"] is None
    assert operator["thumbnail_url"] == f"/api/v1/snapshots/{a}/thumbnail.jpg"
    # worker2 sees the robot's snapshot, not the alert of grid g1 behind it.
    assert snaps.api.get("worker2", f"/api/v1/snapshots/{a}").json()["alert_ids"] == []
    c = snaps.api.get("admin", f"/api/v1/snapshots/{snaps.rows['C'].id}").json()
    assert c["privacy_url"] is None and c["thumbnail_url"] is None and c["original_url"] is None


def fetch(s: Snapshots, role: str, letter: str, variant: Variant) -> tuple[int, bytes, str]:
    """(status, body, content type) of one image."""
    response = s.api.get(role, f"/api/v1/snapshots/{s.rows[letter].id}/{variant.value}.jpg")
    return response.status_code, response.content, response.headers.get("content-type", "")


def test_the_images_are_served_to_those_who_may_see_them(snaps: Snapshots) -> None:
    stored = snaps.rows["A"].files
    for role in ("admin", "operator", "viewer", "worker", "worker2"):
        for variant in (Variant.PRIVACY, Variant.THUMBNAIL):
            status, body, kind = fetch(snaps, role, "A", variant)
            assert (status, kind) == (200, "image/jpeg"), (role, variant)
            assert body == stored[variant] and body.startswith(JPEG_MAGIC)
    status, body, _ = fetch(snaps, "admin", "A", Variant.ORIGINAL)
    assert status == 200 and body == stored[Variant.ORIGINAL]
    assert stored[Variant.ORIGINAL] != stored[Variant.PRIVACY]


def test_role_boundaries_on_snapshots(snaps: Snapshots) -> None:
    b = snaps.rows["B"].id
    # A grid worker of another grid: B is not disclosed at all.
    assert snaps.api.get("worker", f"/api/v1/snapshots/{b}").status_code == 404
    for variant in (Variant.PRIVACY, Variant.THUMBNAIL, Variant.ORIGINAL):
        assert fetch(snaps, "worker", "B", variant)[0] in (403, 404), variant
    assert fetch(snaps, "worker2", "B", Variant.PRIVACY)[0] == 200
    # The original, faces unblurred, is for admins only.
    for role in ("operator", "viewer", "worker", "worker2"):
        assert fetch(snaps, role, "A", Variant.ORIGINAL)[0] == 403, role
    assert snaps.api.client.get(f"/api/v1/snapshots/{b}/privacy.jpg").status_code == 401
    assert snaps.api.get("admin", "/api/v1/snapshots/999999").status_code == 404
    assert snaps.api.get("admin", "/api/v1/snapshots/0").status_code == 422


def test_an_image_not_stored_is_a_404_never_a_server_error(snaps: Snapshots) -> None:
    assert fetch(snaps, "admin", "C", Variant.PRIVACY)[0] == 404
    # Retention deleted the file while its row was being read.
    thumbnail = sha256_hex(snaps.rows["B"].files[Variant.THUMBNAIL])
    assert ImageFiles(snaps.imagery).delete(Variant.THUMBNAIL, thumbnail)
    assert fetch(snaps, "admin", "B", Variant.THUMBNAIL)[0] == 404


def test_an_alert_lists_its_snapshots(snaps: Snapshots) -> None:
    a = snaps.rows["A"].id
    for role in ("admin", "operator", "worker"):
        detail = snaps.api.get(role, f"/api/v1/alerts/{snaps.alert_id}").json()
        assert [s["id"] for s in detail["snapshots"]] == [a], role
        assert detail["snapshots"][0]["thumbnail_url"] == f"/api/v1/snapshots/{a}/thumbnail.jpg"
    # The alert is routed to g1: g2's worker does not see it, nor its snapshot through it.
    assert snaps.api.get("worker2", f"/api/v1/alerts/{snaps.alert_id}").status_code == 404


def signed_path(s: Snapshots, letter: str, variant: Variant, expires_s: int) -> str:
    """The path and query of a signed link, as the alerts service signs it."""
    return SnapshotLinks.from_settings(s.settings).url("", s.rows[letter].id, variant, expires_s)


def test_a_signed_link_opens_without_a_header(snaps: Snapshots) -> None:
    later = WallClock().now_ms() // 1000 + 600
    # B belongs to no alert: the signature, not a role, is the permission.
    for variant in (Variant.PRIVACY, Variant.THUMBNAIL):
        response = snaps.api.client.get(signed_path(snaps, "B", variant, later))
        assert response.status_code == 200, response.text
        assert response.content == snaps.rows["B"].files[variant]
    # A header alone works as before.
    assert fetch(snaps, "worker2", "B", Variant.PRIVACY)[0] == 200


def test_a_changed_or_expired_link_is_refused(snaps: Snapshots) -> None:
    now_s = WallClock().now_ms() // 1000
    good = signed_path(snaps, "A", Variant.PRIVACY, now_s + 600)
    a, b = snaps.rows["A"].id, snaps.rows["B"].id
    query = good.partition("?")[2]
    forged = {
        "another snapshot": f"/api/v1/snapshots/{b}/privacy.jpg?{query}",
        "another variant": f"/api/v1/snapshots/{a}/thumbnail.jpg?{query}",
        "a later expiry": good.replace(f"expires={now_s + 600}", f"expires={now_s + 6000}"),
        "another signature": good[:-1] + ("1" if good[-1] != "1" else "2"),
        "no signature": f"/api/v1/snapshots/{a}/privacy.jpg?expires={now_s + 600}",
    }
    for what, path in forged.items():
        response = snaps.api.client.get(path)
        assert response.status_code == 403, what
        assert "sig" in response.json()["detail"], what
    expired = snaps.api.client.get(signed_path(snaps, "A", Variant.PRIVACY, now_s - 1))
    assert expired.status_code == 403 and "expired" in expired.json()["detail"]
    # The privacy version's signature never opens the original, faces unblurred.
    original = snaps.api.client.get(f"/api/v1/snapshots/{a}/original.jpg?{query}")
    assert original.status_code in (401, 403)
    assert (
        snaps.api.get("operator", f"/api/v1/snapshots/{a}/original.jpg?{query}").status_code == 403
    )
    metrics = snaps.api.get("admin", "/metrics").text
    assert 'route="/api/v1/snapshots/{snapshot}/privacy.jpg",status="403"' in metrics


def test_the_notification_link_opens_through_the_api(snaps: Snapshots) -> None:
    act_on_alert(snaps.settings, "acknowledge", snaps.alert_id, "tester")
    engine = make_engine(snaps.settings.sql_url)
    try:
        with make_sessionmaker(engine)() as session:
            contents = session.scalars(
                select(AlertNotification.content).where(
                    AlertNotification.alert_id == snaps.alert_id
                )
            ).all()
    finally:
        engine.dispose()
    links = {content["event"]["snapshot_link"] for content in contents}
    assert len(links) == 1
    link = links.pop()
    assert link.startswith(f"{snaps.settings.alerts_base_url}/api/v1/snapshots/")
    assert all(link in content["markdown"] for content in contents)
    response = snaps.api.client.get(link.removeprefix(snaps.settings.alerts_base_url))
    assert response.status_code == 200, response.text
    assert response.content == snaps.rows["A"].files[Variant.PRIVACY]


def test_the_dashboards_link_opens_through_the_api(snaps: Snapshots) -> None:
    """The patrol dashboard links to the ``snapshot_link`` the alerts service exports."""
    act_on_alert(snaps.settings, "acknowledge", snaps.alert_id, "tester")
    store = AlertStore(
        default_rules(),
        Router(),
        base_url=snaps.settings.alerts_base_url,
        wall=WallClock(),
        links=SnapshotLinks.from_settings(snaps.settings),
    )
    exporter = TransitionExporter(
        snaps.api.influx,
        frame_link=lambda session, alert: store.frame_link(session, alert, WallClock().now_ms()),
    )
    with transaction(snaps.settings.sql_url) as session:
        assert exporter.export(session) == 1
    series = snaps.api.influx.query(f'SELECT "snapshot_link" FROM "{MEASUREMENT}"')
    (link,) = [row["snapshot_link"] for s in series for row in s.records()]
    assert isinstance(link, str)
    response = snaps.api.client.get(link.removeprefix(snaps.settings.alerts_base_url))
    assert response.status_code == 200, response.text
    assert response.content == snaps.rows["A"].files[Variant.PRIVACY]
