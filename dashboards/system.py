"""系统: is the pipeline healthy? Message rates, rejections, write latency, alert flow."""

from __future__ import annotations

from dashboards.board import Board
from dashboards.influxql import InfluxQL
from dashboards.widgets import (
    ALERT_EVENT,
    COMMUNITY,
    INGEST_REJECTED,
    INGEST_STATS,
    PER_SECOND,
    TIME,
    ident,
    open_alerts,
    select,
    severity_overrides,
    stat_panel,
    timeseries_panel,
)
from devices import KINDS

UID = "gridwatch-system"


def stored_measurements() -> str:
    """A regex over every kind's telemetry and event measurements (from ``KINDS``)."""
    names = sorted(m for kind in KINDS.values() for m in (kind.measurement, kind.measurement_event))
    return "/^(" + "|".join(names) + ")$/"


def board() -> Board:
    """The system dashboard."""
    stored = select(
        f'count("seq") {PER_SECOND}',
        stored_measurements(),
        [COMMUNITY, TIME],
        ["time($__interval)"],
        "fill(0)",
    )
    flow = [
        ("received", "接收 received"),
        ("written", "写入 written"),
        ("rejected", "拒收 rejected"),
    ]
    ingest = select(
        ", ".join(f'sum("{f}") {PER_SECOND} AS "{label}"' for f, label in flow),
        ident(INGEST_STATS),
        [TIME],
        ["time($__interval)"],
        "fill(0)",
    )
    rejected = select(
        f'sum("count") {PER_SECOND}',
        ident(INGEST_REJECTED),
        [TIME],
        ["time($__interval)", "reason"],
        "fill(0)",
    )
    latency = select(
        'mean("write_ms_mean") AS "mean", max("write_ms_max") AS "max"',
        ident(INGEST_STATS),
        [TIME],
        ["time($__interval)", "instance"],
        "fill(none)",
    )
    backlog = select(
        'max("backlog")',
        ident(INGEST_STATS),
        [TIME],
        ["time($__interval)", "instance"],
        "fill(none)",
    )
    transitions = select(
        'count("alert_id")',
        ident(ALERT_EVENT),
        [COMMUNITY, TIME],
        ["time($__interval)", "transition"],
        "fill(0)",
    )
    messages = [
        timeseries_panel(
            "入库消息 Stored messages/s by kind",
            InfluxQL(stored).alias("$measurement"),
            unit="reqps",
            stacked=True,
            span=12,
            description="按设备时间 (ts) 统计的已入库遥测与事件",
        ),
        timeseries_panel(
            "接入 Ingest received / written / rejected",
            InfluxQL(ingest),
            unit="reqps",
            span=12,
            description="ingest 每 10 秒自报 (ingest_stats)",
        ),
        timeseries_panel(
            "拒收原因 Rejections by reason",
            InfluxQL(rejected).alias("$tag_reason"),
            unit="reqps",
            bars=True,
            stacked=True,
            span=12,
        ),
        timeseries_panel(
            "写入延迟 InfluxDB write latency",
            InfluxQL(latency).alias("$tag_instance $col"),
            unit="ms",
            span=12,
        ),
        timeseries_panel(
            "积压 Unacknowledged backlog",
            InfluxQL(backlog).alias("$tag_instance"),
            span=24,
        ),
    ]
    alerts = [
        timeseries_panel(
            "告警流转 Alert transitions",
            InfluxQL(transitions).alias("$tag_transition"),
            bars=True,
            stacked=True,
            span=16,
            description="opened 新告警, acknowledged 已确认, escalated 已升级, resolved 已解除",
        ),
        severity_overrides(
            stat_panel(
                "未处理告警 Open alerts",
                InfluxQL(open_alerts(None, ["severity"])).alias("$tag_severity"),
                steps=((None, "green"), (1, "red")),
                span=8,
                height=8,
            )
        ),
    ]
    return Board(
        uid=UID,
        title="系统 System",
        description="系统健康: 消息速率, 拒收, 写入延迟, 告警流转",
        sections=[("数据接入 Ingest", messages), ("告警管道 Alert pipeline", alerts)],
    )
