"""The doors dashboard (单元门): traffic, refusals, alarms, busiest units, doors offline."""

from __future__ import annotations

from dashboards.board import Board, tag_variable
from dashboards.influxql import InfluxQL
from dashboards.widgets import (
    COMMUNITY,
    ONLINE_MAPPING,
    TIME,
    alert_transitions,
    any_of,
    count_per_interval,
    ident,
    offline_devices,
    select,
    stat_panel,
    table_panel,
    tag_is,
    tag_matches,
    timeseries_panel,
)
from devices.door import KIND

BUILDING = tag_matches("building", "building")
# The alarms a control room reacts to: the door itself says something is wrong.
ALARMS = ("forced_open", "tamper", "held_open")


def board() -> Board:
    """The doors dashboard."""
    events = ident(KIND.measurement_event)
    unlocks = count_per_interval(
        "seq", KIND.measurement_event, [BUILDING, tag_is("event", "unlock")], ["method"]
    )
    refused = count_per_interval(
        "seq", KIND.measurement_event, [BUILDING, tag_is("event", "unlock_failed")], ["reason"]
    )
    alarm_counts = select(
        'count("seq")', events, [COMMUNITY, BUILDING, any_of("event", ALARMS), TIME], ["event"]
    )
    alarm_log = select(
        '"seq", "duration_s"',
        events,
        [COMMUNITY, BUILDING, any_of("event", ALARMS), TIME],
        ["building", "unit", "device_id", "event"],
        "ORDER BY time DESC LIMIT 100",
    )
    busiest = select(
        'count("seq") AS "unlocks"',
        events,
        [COMMUNITY, BUILDING, tag_is("event", "unlock"), TIME],
        ["building", "unit"],
    )
    traffic = [
        timeseries_panel(
            "开门方式 Unlocks by method",
            InfluxQL(unlocks).alias("$tag_method"),
            bars=True,
            stacked=True,
            span=16,
        ),
        table_panel(
            "最繁忙单元 Busiest units",
            InfluxQL(busiest),
            sort_by="开门次数",
            descending=True,
            renames={"building": "楼", "unit": "单元", "unlocks": "开门次数"},
            span=8,
        ),
        timeseries_panel(
            "开门失败 Failed attempts",
            InfluxQL(refused).alias("$tag_reason"),
            bars=True,
            stacked=True,
            span=24,
        ),
    ]
    alarms = [
        stat_panel(
            "报警次数 Alarms",
            InfluxQL(alarm_counts).alias("$tag_event"),
            steps=((None, "green"), (1, "red")),
            reducer="sum",
            span=12,
            height=8,
            description="forced_open 强行开门, tamper 防拆, held_open 超时未关",
        ),
        table_panel(
            "报警记录 Forced, tamper, held open",
            InfluxQL(alarm_log),
            renames={"duration_s": "未关时长 s", "event": "事件", "building": "楼", "unit": "单元"},
            span=12,
        ),
        table_panel(
            "离线单元门 Doors offline",
            InfluxQL(offline_devices(KIND.name, ["building", "unit"])),
            mappings=[ONLINE_MAPPING],
            renames={"Time": "离线时间", "building": "楼", "unit": "单元"},
            span=12,
        ),
        table_panel(
            "单元门告警 Door alerts",
            InfluxQL(alert_transitions(KIND.name)),
            span=12,
        ),
    ]
    return Board(
        uid="gridwatch-door",
        title="单元门 Doors",
        description="智慧单元门: 通行, 开门失败, 报警, 离线",
        kind=KIND.name,
        variables=[tag_variable("building", "楼 Building", KIND.measurement)],
        sections=[("通行 Traffic", traffic), ("报警与离线 Alarms and offline", alarms)],
    )
