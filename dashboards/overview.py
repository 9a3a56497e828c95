"""总览: the control room's wall screen. What is offline, what is wrong now, where."""

from __future__ import annotations

from dashboards.board import Board
from dashboards.influxql import InfluxQL
from dashboards.widgets import (
    COMMUNITY,
    DEVICE_INFO,
    INGEST_STATS,
    ONLINE_MAPPING,
    PER_SECOND,
    TIME,
    alert_transitions,
    geomap_panel,
    ident,
    join_by,
    latest_status,
    marker_layer,
    open_alerts,
    select,
    severity_overrides,
    stat_panel,
    subquery,
    table_panel,
)

UID = "gridwatch-overview"


def devices_by_state(online: bool) -> str:
    """How many devices of each kind last said they were online (or offline)."""
    state = "true" if online else "false"
    return select(
        'count("online")', subquery(latest_status(None)), [f'"online" = {state}'], ["kind"]
    )


def ingest_rate() -> str:
    """Messages per second received by all ingestors (their self-report)."""
    return select(
        f'sum("received") {PER_SECOND}',
        ident(INGEST_STATS),
        [TIME],
        ["time($__interval)"],
        "fill(0)",
    )


def ingest_backlog() -> str:
    """Messages held unacknowledged by each ingestor at its last report."""
    return select('last("backlog")', ident(INGEST_STATS), [TIME], ["instance"])


def board() -> Board:
    """The overview dashboard."""
    positions = select(
        'last("lat") AS "lat", last("lon") AS "lon", last("place") AS "place"',
        ident(DEVICE_INFO),
        [COMMUNITY],
        ["device_id", "kind"],
    )
    state = [
        stat_panel(
            "在线 Online",
            InfluxQL(devices_by_state(True)).alias("$tag_kind"),
            steps=((None, "green"),),
            span=8,
        ),
        stat_panel(
            "离线 Offline",
            InfluxQL(devices_by_state(False)).alias("$tag_kind"),
            steps=((None, "green"), (1, "red")),
            span=8,
        ),
        severity_overrides(
            stat_panel(
                "未处理告警 Open alerts",
                InfluxQL(open_alerts(None, ["severity"])).alias("$tag_severity"),
                steps=((None, "green"), (1, "red")),
                span=8,
            )
        ),
    ]
    where = [
        geomap_panel(
            "设备地图 Devices",
            InfluxQL(positions),
            InfluxQL(latest_status(None)),
            layers=[marker_layer("设备", colour_field="online")],
            transformations=[join_by("device_id")],
            mappings=[ONLINE_MAPPING],
            span=12,
            height=14,
            description="绿: 在线, 红: 离线 (最后一次状态上报); 位置来自登记信息",
        ),
        table_panel(
            "最新告警 Latest alerts",
            InfluxQL(alert_transitions(None)),
            renames={
                "title": "告警",
                "place": "位置",
                "severity": "级别",
                "transition": "状态",
                "rule": "规则",
            },
            span=12,
            height=14,
        ),
    ]
    health = [
        stat_panel(
            "接入速率 Ingest msg/s",
            InfluxQL(ingest_rate()).alias("msg/s"),
            unit="reqps",
            steps=((None, "green"),),
            span=12,
            height=4,
        ),
        stat_panel(
            "积压 Ingest backlog",
            InfluxQL(ingest_backlog()).alias("$tag_instance"),
            steps=((None, "green"), (1000, "orange"), (10000, "red")),
            span=12,
            height=4,
        ),
    ]
    return Board(
        uid=UID,
        title="总览 Control room overview",
        description="社区监控室总览: 在线离线, 未处理告警, 设备地图, 最新告警, 数据接入",
        sections=[
            ("设备与告警 Devices and alerts", state),
            ("在哪里 Where", where),
            ("数据接入 Ingest", health),
        ],
    )
