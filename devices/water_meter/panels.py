"""The elderly-care dashboard (重点管护): each watched household's water, most worrying first."""

from __future__ import annotations

from dashboards.board import Board
from dashboards.influxql import InfluxQL
from dashboards.widgets import (
    COMMUNITY,
    ONLINE_MAPPING,
    TIME,
    alert_transitions,
    ident,
    join_by,
    latest_status,
    offline_devices,
    open_alerts,
    place_name,
    select,
    stat_panel,
    subquery,
    table_panel,
    timeseries_panel,
)
from devices.water_meter import KIND

METERS = ident(KIND.measurement)
HOUSEHOLD = ["device_id", "building", "unit", "room"]
# How far back "usual" daily use looks.
USUAL_DAYS = 7


def board() -> Board:
    """The elderly-care dashboard."""
    # The register moved: the household drew water. Its last move is the last use.
    moves = select('difference("total_l") AS "used_l"', METERS, [COMMUNITY, TIME], HOUSEHOLD)
    last_use = select(
        'last("used_l") AS "last_use_l"', subquery(moves), ['"used_l" > 0'], HOUSEHOLD
    )
    recent = select(
        'spread("total_l") AS "used_24h_l"', METERS, [COMMUNITY, "time >= now() - 24h"], HOUSEHOLD
    )
    usual = select(
        f'spread("total_l") / {USUAL_DAYS} AS "usual_day_l"',
        METERS,
        [COMMUNITY, f"time >= now() - {USUAL_DAYS}d"],
        HOUSEHOLD,
    )
    flow_now = select('last("flow_lpm") AS "flow_lpm"', METERS, [COMMUNITY], HOUSEHOLD)
    status = latest_status(KIND.name)
    flow = select(
        'max("flow_lpm")',
        METERS,
        [COMMUNITY, TIME],
        ["time($__interval)", "building", "unit", "room"],
        "fill(0)",
    )
    households = [
        table_panel(
            "重点管护户 Watched households",
            InfluxQL(last_use),
            InfluxQL(recent),
            InfluxQL(usual),
            InfluxQL(flow_now),
            InfluxQL(status),
            transformations=[join_by("device_id")],
            renames={
                "Time 1": "上次用水",
                "building": "楼",
                "unit": "单元",
                "room": "户",
                "used_24h_l": "近24小时用水 L",
                "usual_day_l": f"{USUAL_DAYS}日日均 L",
                "flow_lpm": "当前流量 L/min",
                "online": "水表",
            },
            # Oldest last use first: the household that has not drawn water longest.
            sort_by="上次用水",
            mappings=[ONLINE_MAPPING],
            span=24,
            height=12,
            description="按上次用水时间排序, 最久未用水的在最上面; 12 小时未用水即告警",
        ),
    ]
    care = [
        stat_panel(
            "管护告警 Open care alerts",
            InfluxQL(open_alerts(KIND.name, ["severity"])).alias("$tag_severity"),
            steps=((None, "green"), (1, "red")),
            span=6,
            height=8,
        ),
        table_panel(
            "离线水表 Meters offline",
            InfluxQL(offline_devices(KIND.name, ["building", "unit", "room"])),
            mappings=[ONLINE_MAPPING],
            renames={"Time": "离线时间", "building": "楼", "unit": "单元", "room": "户"},
            span=8,
            height=8,
        ),
        timeseries_panel(
            "用水流量 Flow",
            InfluxQL(flow).alias(place_name()),
            unit="flowlpm",
            span=10,
            height=8,
        ),
        table_panel("管护告警记录 Care alerts", InfluxQL(alert_transitions(KIND.name)), span=24),
    ]
    return Board(
        uid="gridwatch-care",
        title="重点管护 Elderly care",
        description="独居老人家庭水表: 多久没用水, 用水比平时, 当前流量, 离线",
        kind=KIND.name,
        sections=[("管护户 Households", households), ("告警与流量 Alerts and flow", care)],
    )
