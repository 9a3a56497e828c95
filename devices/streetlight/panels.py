"""The street lamps dashboard (路灯): lamps on a map, failures, power and energy, day burning."""

from __future__ import annotations

from dashboards.board import Board, tag_variable
from dashboards.influxql import InfluxQL
from dashboards.widgets import (
    COMMUNITY,
    DEVICE_INFO,
    TIME,
    alert_transitions,
    count_per_interval,
    geomap_panel,
    ident,
    join_by,
    marker_layer,
    open_alerts,
    select,
    stat_panel,
    subquery,
    table_panel,
    tag_is,
    tag_matches,
    timeseries_panel,
)
from devices.streetlight import KIND

CIRCUIT = tag_matches("circuit", "circuit")
LAMPS = ident(KIND.measurement)
# A lamp drawing this much is lit (standby is 0.4 W); "failed" is the alerts' verdict.
LIT_W = 5
# Daylight at the lamp's own sensor: far above dusk (~10 lx), far below noon (~30000 lx).
DAYLIGHT_LX = 1000
DAILY = "time(1d, -8h)"  # calendar days of China Standard Time (UTC+8), where lamps are


def board() -> Board:
    """The street lamps dashboard."""
    where = [COMMUNITY, CIRCUIT]
    positions = select(
        'last("lat") AS "lat", last("lon") AS "lon", last("place") AS "place"',
        ident(DEVICE_INFO),
        [*where, tag_is("kind", KIND.name)],
        ["device_id", "circuit"],
    )
    now = select('last("power_w") AS "power_w", last("on") AS "on"', LAMPS, where, ["device_id"])
    latest = select(
        'last("power_w") AS "power_w", last("on") AS "on"', LAMPS, [*where, TIME], ["device_id"]
    )
    lit = select('count("on") AS "lit"', subquery(latest), [f'"power_w" >= {LIT_W}'])
    per_lamp_power = select(
        'mean("power_w") AS "power_w"',
        LAMPS,
        [*where, TIME],
        ["time($__interval)", "device_id", "circuit"],
    )
    circuit_power = select(
        'sum("power_w")', subquery(per_lamp_power), [TIME], ["time($__interval)", "circuit"]
    )
    per_lamp_energy = select(
        'spread("energy_kwh") AS "kwh"', LAMPS, [*where, TIME], [DAILY, "device_id", "circuit"]
    )
    daily_energy = select('sum("kwh")', subquery(per_lamp_energy), [TIME], [DAILY, "circuit"])
    faults = count_per_interval(
        "seq", KIND.measurement_event, [CIRCUIT, tag_is("event", "fault")], ["circuit"]
    )
    day_burning = select(
        'max("lux") AS "lux", max("power_w") AS "power_w"',
        LAMPS,
        [*where, f'"power_w" >= {LIT_W}', f'"lux" >= {DAYLIGHT_LX}', TIME],
        ["circuit", "device_id"],
    )
    lamps = [
        stat_panel(
            "点亮 Lit now",
            InfluxQL(lit),
            steps=((None, "yellow"),),
            span=12,
            height=5,
        ),
        stat_panel(
            "路灯告警 Open lamp alerts",
            InfluxQL(open_alerts(KIND.name, ["severity"])).alias("$tag_severity"),
            steps=((None, "green"), (1, "red")),
            span=12,
            height=5,
        ),
        geomap_panel(
            "路灯地图 Lamps lit / off",
            InfluxQL(positions),
            InfluxQL(now),
            layers=[marker_layer("路灯", colour_field="power_w")],
            transformations=[join_by("device_id")],
            steps=((None, "#808080"), (LIT_W, "yellow")),
            span=12,
            description="黄: 点亮 (功率 ≥ 5 W), 灰: 熄灭; 位置来自登记信息 (device_info)",
        ),
        table_panel(
            "白天亮灯 Burning in daylight",
            InfluxQL(day_burning),
            renames={"lux": "照度 lx", "power_w": "功率 W", "circuit": "回路"},
            span=12,
            height=12,
            description=f"环境照度 ≥ {DAYLIGHT_LX} lx 时功率 ≥ {LIT_W} W 的路灯",
        ),
    ]
    energy = [
        timeseries_panel(
            "回路功率 Power by circuit",
            InfluxQL(circuit_power).alias("$tag_circuit回路"),
            unit="watt",
            stacked=True,
            span=12,
        ),
        timeseries_panel(
            "每日用电 Energy per day",
            InfluxQL(daily_energy).alias("$tag_circuit回路"),
            unit="kwatth",
            bars=True,
            stacked=True,
            span=12,
        ),
        timeseries_panel(
            "故障按回路 Faults by circuit",
            InfluxQL(faults).alias("$tag_circuit回路"),
            bars=True,
            stacked=True,
            span=12,
        ),
        table_panel("路灯告警记录 Lamp alerts", InfluxQL(alert_transitions(KIND.name)), span=12),
    ]
    return Board(
        uid="gridwatch-streetlight",
        title="路灯 Street lamps",
        description="智慧路灯: 亮灯, 故障, 功率与用电, 白天亮灯",
        kind=KIND.name,
        variables=[tag_variable("circuit", "回路 Circuit", KIND.measurement)],
        sections=[("亮灯 Lamps", lamps), ("用电与故障 Energy and faults", energy)],
    )
