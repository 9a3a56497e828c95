"""Every panel's queries, run as Grafana would run them, against a simulated night of 张家新村.

Grafana cannot run here, so this proves what it would show: six simulated hours
(21:00-03:00 local time, so the lamps are lit and the robot patrols) of all 342
devices of the demo community go through ingest's own decoding into the real
influxd, with a few scripted faults. Then every query of every panel, variable and
annotation is run with ``$timeFilter``, ``$__interval`` and the variables
substituted as Grafana substitutes them, and must return rows carrying every
column the panel uses (aliases' tags, renamed and joined columns, map coordinates,
link fields). No panel may come back empty.

What other services write (alert transitions from the alerts service, ingest's
self-report and the registry's device positions) is written here as those
services are specified to write it (dashboards/README.md).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dashboards.build import dashboards
from dashboards.widgets import ALERT_EVENT, DEVICE_INFO, INGEST_REJECTED, INGEST_STATS
from devices.contract import Channel, Community, DeviceRecord, device_topic
from devices.points import device_tags
from gridwatch.clock import SimulatedClock, WallClock
from influx.client import InfluxClient, Series
from influx.lineprotocol import FieldValue, Point, encode_point
from ingest.decode import Accepted, Limits, decode_message
from registry.db import make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_file
from registry.records import load_communities, load_devices
from simulators.engine import Simulation
from simulators.memory import MemoryTransport
from stack.servers import Influxd

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Shanghai")
HOURS = 6
BATCH = 5000
# Grafana's interval: range / max data points, rounded up to one of these (seconds).
NICE_INTERVALS_S = (1, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 21600, 86400)
MAX_DATA_POINTS = 1000
GRAFANA_BUILTINS = {"timeFilter", "__interval", "__interval_ms"}


class Night:
    """The simulated window and the database holding it."""

    def __init__(self, client: InfluxClient, start_ms: int, end_ms: int) -> None:
        self.client = client
        self.start_ms = start_ms
        self.end_ms = end_ms


def window() -> tuple[int, int]:
    """21:00 to 03:00 local time, the last such night that ended (no ts in the future)."""
    now = datetime.now(TZ)
    end = now.replace(hour=3, minute=0, second=0, microsecond=0)
    if end > now - timedelta(minutes=5):
        end -= timedelta(days=1)
    start = end - timedelta(hours=HOURS)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def demo_registry(tmp: Path) -> tuple[list[Community], list[DeviceRecord]]:
    """The demo community, imported into a fresh SQLite registry."""
    url = f"sqlite:///{tmp / 'gridwatch.db'}"
    migrate(url)
    with make_sessionmaker(make_engine(url))() as session:
        import_file(session, DEMO_COMMUNITY_FILE)
        session.commit()
        return load_communities(session), load_devices(session)


def scripted_faults(devices: list[DeviceRecord], start: int) -> list[tuple[str, dict[str, Any]]]:
    """What the simulator never does, so that the alarm panels have something to show."""
    door = next(d for d in devices if d.kind == "door")
    lamp = next(d for d in devices if d.kind == "streetlight")
    robot = next(d for d in devices if d.kind == "patrol_robot")

    def topic(device: DeviceRecord, channel: str) -> str:
        return f"sc/{device.community}/{device.kind}/{device.device_id}/{channel}"

    t = start + 3_600_000
    return [
        (topic(door, "event"), {"ts": t, "seq": 10**9, "event": "forced_open"}),
        (topic(door, "event"), {"ts": t + 1, "seq": 10**9 + 1, "event": "tamper"}),
        (
            topic(door, "event"),
            {"ts": t + 2, "seq": 10**9 + 2, "event": "held_open", "duration_s": 240},
        ),
        (topic(lamp, "event"), {"ts": t, "seq": 10**9, "event": "fault", "fault": "lamp_failure"}),
        # A lamp whose sensor reads daylight while it burns.
        (
            topic(lamp, "telemetry"),
            {
                "ts": t + 5,
                "seq": 10**9 + 1,
                "on": True,
                "dim_pct": 100,
                "voltage_v": 221.0,
                "current_a": 0.45,
                "power_w": 99.5,
                "energy_kwh": 10**6,
                "lux": 25000.0,
            },
        ),
        (
            topic(robot, "event"),
            {
                "ts": t,
                "seq": 10**9,
                "event": "detection",
                "scene": "smoke_fire",
                "confidence": 0.93,
                "lat": 36.8131,
                "lon": 118.0549,
                "snapshot_id": "s-test-0001",
            },
        ),
    ]


def alert_points(devices: list[DeviceRecord], start: int) -> list[Point]:
    """Alert transitions as the alerts service writes them (measurement ``alert_event``)."""
    door = next(d for d in devices if d.kind == "door")
    meter = next(d for d in devices if d.kind == "water_meter")
    lamp = next(d for d in devices if d.kind == "streetlight")
    robot = next(d for d in devices if d.kind == "patrol_robot")
    script = [
        (door, "door.forced", "critical", ["opened", "acknowledged"], "单元门被强行打开"),
        (meter, "water.no_use", "critical", ["opened", "escalated"], "12小时未用水"),
        (lamp, "light.failure", "major", ["opened", "acknowledged", "resolved"], "路灯不亮"),
        (robot, "robot.scene", "critical", ["opened"], "发现烟火"),
    ]
    points = []
    for n, (device, rule, severity, transitions, title) in enumerate(script):
        for step, transition in enumerate(transitions):
            tags = {
                "community": device.community,
                "rule": rule,
                "severity": severity,
                "kind": device.kind,
                "transition": transition,
            }
            fields: dict[str, FieldValue] = {
                "alert_id": f"a-{n}",
                "device_id": device.device_id,
                "subject": device.device_id,
                "place": device.place,
                "title": title,
                "open": {"opened": 1, "resolved": -1}.get(transition, 0),
            }
            if device is robot:  # a robot's alert names its frame: the signed link to it
                fields["snapshot_link"] = f"http://127.0.0.1:8000/api/v1/snapshots/{n}/privacy.jpg"
            points.append(Point(ALERT_EVENT, tags, fields, start + 3_700_000 + step * 600_000))
    return points


def device_info_points(devices: list[DeviceRecord], at_ms: int) -> list[Point]:
    """Each device's registered position, as ingest writes it on a registry load."""
    return [
        Point(
            DEVICE_INFO,
            device_tags(d, with_kind=True),
            {"lat": d.lat or 0.0, "lon": d.lon or 0.0, "place": d.place},
            at_ms,
        )
        for d in devices
    ]


def ingest_report_points(start: int, end: int) -> list[Point]:
    """Ingest's self-report every 10 s: one ``ingest_stats`` point, and ``ingest_rejected``
    per (reason, kind) that had rejections in the interval."""
    points = []
    for n, t in enumerate(range(start, end, 600_000)):  # sparse: enough to draw
        stats: dict[str, FieldValue] = {
            "received": 1200 + n,
            "written": 1190 + n,
            "rejected": 10,
            "ignored": 0,
            "write_retries": 0,
            "writes": 3,
            "write_ms_mean": 4.5,
            "write_ms_max": 11.0,
            "backlog": 12,
            "broker_up": True,
            "influx_up": True,
            "interval_s": 10.0,
        }
        points.append(Point(INGEST_STATS, {"instance": "gridwatch-ingest"}, stats, t))
        tags = {"instance": "gridwatch-ingest", "reason": "schema", "kind": "door"}
        points.append(Point(INGEST_REJECTED, tags, {"count": 10}, t))
    return points


def write_lines(client: InfluxClient, lines: list[str]) -> None:
    for i in range(0, len(lines), BATCH):
        client.write("\n".join(lines[i : i + BATCH]).encode())


@pytest.fixture(scope="module")
def night(influxd: Influxd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Night]:
    communities, devices = demo_registry(tmp_path_factory.mktemp("registry"))
    by_id = {d.device_id: d for d in devices}
    start, end = window()
    clock = SimulatedClock(start, speed=0)
    recorder = MemoryTransport(clock, devices)
    simulation = Simulation(communities, devices, clock=clock, seed=7, transport=recorder)
    simulation.announce(online=True)
    simulation.run(end, threading.Event())
    # Last wills of a few devices: they show as offline.
    offline = [d for d in devices if d.kind in ("door", "water_meter")][::40]
    wills = [
        (device_topic(d.community, d.kind, d.device_id, Channel.STATUS), b'{"online":false}')
        for d in offline
    ]
    scripted = [(t, json.dumps(p).encode()) for t, p in scripted_faults(devices, start)]

    now = WallClock().now_ms()
    lines = []
    recorded = [(m.topic, m.payload) for m in recorder.messages]
    for topic, payload in [*recorded, *scripted, *wills]:
        arrival = end + 1000 if (topic, payload) in wills else now
        outcome = decode_message(topic, payload, devices=by_id, now_ms=arrival, limits=Limits())
        assert isinstance(outcome, Accepted), (topic, payload, outcome)
        lines.append(outcome.line)
    others = [
        *alert_points(devices, start),
        *device_info_points(devices, start),
        *ingest_report_points(start, end),
    ]
    lines += [encode_point(p) for p in others]

    with InfluxClient(influxd.url, "dashboards_night") as client:
        client.ensure_database("INF")
        write_lines(client, lines)
        yield Night(client, start, end)
        client.query('DROP DATABASE "dashboards_night"')


# --- Grafana's substitution ---------------------------------------------------------


def interval_s(start_ms: int, end_ms: int) -> int:
    """Grafana's ``$__interval`` for the range: range / max data points, rounded up."""
    raw = (end_ms - start_ms) / 1000 / MAX_DATA_POINTS
    return next(s for s in NICE_INTERVALS_S if s >= raw)


def grafana_duration(seconds: int) -> str:
    """How Grafana writes an interval: 20s, 1m, 2h..."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def substitute(query: str, night: Night, variables: dict[str, str]) -> str:
    """The query as Grafana sends it: built-ins and dashboard variables replaced."""
    step = interval_s(night.start_ms, night.end_ms)
    builtins = {
        "timeFilter": f"time >= {night.start_ms}ms and time <= {night.end_ms}ms",
        "__interval_ms": str(step * 1000),
        "__interval": grafana_duration(step),
    }
    values = builtins | variables

    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        assert name in values, f"${name} is not a variable of the dashboard: {query}"
        return values[name]

    # The dashboard as seen just after the simulated night: panels that look back from
    # now() (e.g. the last 24 h) would otherwise miss a night that ended 24 h ago.
    seen_at = f"{night.end_ms + 60_000}ms"
    query = query.replace("now()", seen_at)
    return re.sub(r"\$(?:\{(?P<braced>\w+)\}|(?P<plain>\w+))", replace, query)


def variable_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every variable as Grafana interpolates it in a regex: the community, All elsewhere."""
    values = {}
    for variable in dashboard["templating"]["list"]:
        name = variable["name"]
        if name == "community":
            values[name] = "zjxc"
        elif variable["type"] == "query":
            values[name] = variable["allValue"]
        else:
            values[name] = variable["query"]
    return values


# --- what a panel needs from its data ------------------------------------------------


def columns_of(series: list[Series]) -> set[str]:
    """Every column and tag name the results carry."""
    return {c for s in series for c in s.columns} | {t for s in series for t in s.tags}


def required_columns(panel: dict[str, Any]) -> set[str]:
    """The columns a panel's configuration refers to, by the names the queries give them."""
    needed: set[str] = set()
    for target in panel["targets"]:
        # Grafana's alias pattern is a JavaScript \w: ASCII, so "$tag_circuit回路" is tag circuit.
        needed |= set(re.findall(r"\$tag_([A-Za-z0-9_]+)", target.get("alias", "")))
    for step in panel.get("transformations", []):
        options = step["options"]
        if step["id"] == "joinByField":
            needed.add(options["byField"])
        if step["id"] == "organize":
            needed |= {name for name in options["renameByName"] if not name.startswith("Time")}
    for layer in panel.get("options", {}).get("layers", []):
        location = layer["location"]
        needed |= {location["latitude"], location["longitude"]}
        field = layer["config"]["style"]["color"].get("field")
        if field:
            needed.add(field)
    for override in panel["fieldConfig"].get("overrides", []):
        for prop in override["properties"]:
            if prop["id"] == "links":
                for link in prop["value"]:
                    needed |= set(re.findall(r"__data\.fields\.(\w+)", link["url"]))
                needed.add(override["matcher"]["options"])
    return needed


def panels_with_queries() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, dashboard in dashboards().items():
        for panel in dashboard["panels"]:
            if panel.get("targets"):
                yield name, dashboard, panel


PANELS = list(panels_with_queries())


def run(night: Night, query: str, dashboard: dict[str, Any]) -> list[Series]:
    return night.client.query(substitute(query, night, variable_values(dashboard)))


@pytest.mark.parametrize(
    ("name", "dashboard", "panel"),
    PANELS,
    ids=[f"{name.removesuffix('.json')}:{panel['title']}" for name, _, panel in PANELS],
)
def test_panel_queries_return_what_the_panel_shows(
    night: Night, name: str, dashboard: dict[str, Any], panel: dict[str, Any]
) -> None:
    found: set[str] = set()
    for target in panel["targets"]:
        series = run(night, target["query"], dashboard)
        rows = sum(len(s.values) for s in series)
        assert rows, f"{panel['title']} / {target['refId']}: no rows for\n{target['query']}"
        columns = columns_of(series)
        if target["resultFormat"] == "time_series":
            assert all(s.columns[0] == "time" and len(s.columns) >= 2 for s in series)
            numbers = [v for s in series for row in s.values for v in row[1:]]
            assert any(isinstance(v, int | float) for v in numbers), target["query"]
        found |= columns
    missing = required_columns(panel) - found
    assert not missing, f"{panel['title']}: the panel uses {missing}, the queries give {found}"


def test_variables_list_values(night: Night) -> None:
    for dashboard in dashboards().values():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            series = run(night, variable["query"], dashboard)
            values = {row[1] for s in series for row in s.values}
            assert values, f"{dashboard['uid']}: ${variable['name']} lists nothing"
            if variable["name"] == "community":
                assert values == {"zjxc"}


def test_alert_annotations_mark_opened_alerts(night: Night) -> None:
    for dashboard in dashboards().values():
        [annotation] = dashboard["annotations"]["list"]
        series = run(night, annotation["target"]["query"], dashboard)
        rows = [row for s in series for row in s.records()]
        assert rows, dashboard["uid"]
        for field in annotation["mappings"].values():
            assert all(row.get(field["value"]) for row in rows), field


def test_open_alerts_count_only_what_is_open(night: Night) -> None:
    dashboard = dashboards()["gridwatch-overview.json"]
    [panel] = [p for p in dashboard["panels"] if p["title"] == "未处理告警 Open alerts"]
    series = run(night, panel["targets"][0]["query"], dashboard)
    # The lamp's alert was resolved; the door's, the meter's and the robot's are open.
    assert {s.tags["severity"]: s.values[0][1] for s in series} == {"critical": 3, "major": 0}


def test_offline_tables_list_the_devices_that_left_their_will(night: Night) -> None:
    dashboard = dashboards()["gridwatch-door.json"]
    [panel] = [p for p in dashboard["panels"] if p["title"] == "离线单元门 Doors offline"]
    series = run(night, panel["targets"][0]["query"], dashboard)
    offline = {s.tags["device_id"] for s in series}
    assert offline and all(d.startswith("zjxc-door-") for d in offline)
    assert all(row[1] is False for s in series for row in s.values)
