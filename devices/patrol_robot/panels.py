"""The patrol dashboard (巡逻): route and position, battery, checkpoints per night, detections."""

from __future__ import annotations

from dashboards.board import Board
from dashboards.influxql import InfluxQL
from dashboards.widgets import (
    COMMUNITY,
    TIME,
    alert_transitions,
    count_per_interval,
    geomap_panel,
    ident,
    link_column,
    marker_layer,
    select,
    stat_panel,
    table_panel,
    tag_is,
    timeseries_panel,
)
from devices.patrol_robot import KIND

ROBOTS = ident(KIND.measurement)
EVENTS = ident(KIND.measurement_event)
# A night runs from one local noon to the next (04:00 UTC at UTC+8): one patrol per bucket.
NIGHTLY = "time(1d, 4h)"
# The alerts service writes each robot alert's signed link to its frame (alerts/export.py):
# a browser sends Grafana's users no credentials to the API, so the link carries its own.
SNAPSHOT_LINK = "snapshot_link"


def board() -> Board:
    """The patrol dashboard."""
    track = select('"lat", "lon", "mode", "battery_pct"', ROBOTS, [COMMUNITY, TIME], ["device_id"])
    position = select(
        'last("lat") AS "lat", last("lon") AS "lon", last("mode") AS "mode", '
        'last("battery_pct") AS "battery_pct"',
        ROBOTS,
        [COMMUNITY],
        ["device_id"],
    )
    detection = [COMMUNITY, tag_is("event", "detection"), TIME]
    spots = select('"lat", "lon", "confidence"', EVENTS, detection, ["scene", "device_id"])
    battery = select(
        'mean("battery_pct")',
        ROBOTS,
        [COMMUNITY, TIME],
        ["time($__interval)", "device_id"],
        "fill(none)",
    )
    checkpoints = select(
        'count(distinct("checkpoint_id")) AS "checkpoints"',
        EVENTS,
        [COMMUNITY, tag_is("event", "checkpoint"), TIME],
        [NIGHTLY, "device_id"],
    )
    passes = select(
        'count("checkpoint_id") AS "passes"',
        EVENTS,
        [COMMUNITY, tag_is("event", "checkpoint"), TIME],
        [NIGHTLY, "device_id"],
    )
    scenes = count_per_interval(
        "confidence", KIND.measurement_event, [tag_is("event", "detection")], ["scene"]
    )
    log = select(
        '"confidence", "snapshot_id", "lat", "lon"',
        EVENTS,
        detection,
        ["device_id", "scene"],
        "ORDER BY time DESC LIMIT 200",
    )
    patrol = [
        stat_panel(
            "电量 Battery now",
            InfluxQL(select('last("battery_pct")', ROBOTS, [COMMUNITY], ["device_id"])).alias(
                "$tag_device_id"
            ),
            unit="percent",
            steps=((None, "red"), (15, "orange"), (40, "green")),
            span=24,
            height=4,
        ),
        geomap_panel(
            "路线与位置 Route and position",
            InfluxQL(track),
            InfluxQL(position),
            InfluxQL(spots),
            layers=[
                marker_layer("巡逻轨迹", "A", fixed_colour="blue"),
                marker_layer("当前位置", "B", fixed_colour="green"),
                marker_layer("检测", "C", fixed_colour="red"),
            ],
            span=14,
            height=14,
        ),
        timeseries_panel(
            "电量 Battery",
            InfluxQL(battery).alias("$tag_device_id"),
            unit="percent",
            span=10,
            height=14,
        ),
    ]
    coverage = [
        timeseries_panel(
            "每晚巡更点 Checkpoints per night",
            InfluxQL(checkpoints).alias("$tag_device_id 不同巡更点"),
            InfluxQL(passes).alias("$tag_device_id 经过次数"),
            bars=True,
            span=12,
            description="每晚经过的不同巡更点数, 以及经过巡更点的总次数 (每圈每点一次)",
        ),
        timeseries_panel(
            "检测 Detections by scene",
            InfluxQL(scenes).alias("$tag_scene"),
            bars=True,
            stacked=True,
            span=12,
        ),
        table_panel(
            "检测记录 Detections",
            InfluxQL(log),
            renames={"scene": "场景", "confidence": "置信度"},
            span=12,
            height=10,
        ),
        link_column(
            table_panel(
                "巡逻告警与抓拍 Patrol alerts and snapshots",
                InfluxQL(alert_transitions(KIND.name, SNAPSHOT_LINK)),
                span=12,
                height=10,
                description="抓拍链接打开告警现场照片（已打码）, 在照片保存期内有效",
            ),
            SNAPSHOT_LINK,
            "抓拍（已打码） Snapshot",
            f"${{__data.fields.{SNAPSHOT_LINK}}}",
        ),
    ]
    return Board(
        uid="gridwatch-patrol",
        title="巡逻 Patrol",
        description="无人巡逻车: 路线与位置, 电量, 每晚巡更覆盖, 场景检测与抓拍",
        kind=KIND.name,
        sections=[("巡逻 Patrol", patrol), ("覆盖与检测 Coverage and detections", coverage)],
    )
