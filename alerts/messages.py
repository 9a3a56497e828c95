"""The words of a notification: short, Chinese, actionable.

Every message says how urgent, what, where (张家新村 3号楼2单元501), since
when, what to do, and links to the alert. ``render`` makes one content for a
transition, in the forms the channels need: a Markdown text (WeCom, DingTalk),
a plain short text (SMS) and a structured event (webhook, MQTT).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from alerts.models import ACKNOWLEDGED, ESCALATED, OPENED, SYSTEM, Alert, AlertTransition

SEVERITY_ZH = {"critical": "紧急", "major": "重要", "minor": "一般"}
SMS_SIGNATURE = "【社区网格】"
# WeCom refuses Markdown over 4096 bytes; DingTalk's limit is larger. A message
# this short is never near it; the cap guards against a runaway fact list.
MAX_MARKDOWN_BYTES = 4000


def when(ms: int, tz: ZoneInfo) -> str:
    """11月22日 23:41, in the community's time zone."""
    local = datetime.fromtimestamp(ms / 1000, tz)
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def duration(ms: int) -> str:
    """1小时5分钟, 12分钟, 不到1分钟."""
    minutes = max(0, ms) // 60_000
    if minutes < 1:
        return "不到1分钟"
    hours, minutes = divmod(minutes, 60)
    if hours and minutes:
        return f"{hours}小时{minutes}分钟"
    return f"{hours}小时" if hours else f"{minutes}分钟"


def alert_link(base_url: str, alert_id: int) -> str:
    """Where a person opens the alert."""
    return f"{base_url.rstrip('/')}/alerts/{alert_id}"


def _heading(alert: Alert, step: AlertTransition) -> str:
    severity = SEVERITY_ZH.get(alert.severity, alert.severity)
    if step.transition == OPENED:
        return f"【{severity}】{alert.title}"
    if step.transition == ESCALATED:
        waited = duration(step.at_ms - alert.opened_ms)
        return f"【升级·{severity}】{alert.title}（{waited}无人确认）"
    if step.transition == ACKNOWLEDGED:
        return f"【已确认】{alert.title}"
    return f"【{'已恢复' if step.by == SYSTEM else '已处理'}】{alert.title}"


def _status_line(alert: Alert, step: AlertTransition, tz: ZoneInfo) -> tuple[str, str]:
    if step.transition == OPENED:
        return "时间", f"{when(alert.since_ms, tz)} 起"
    if step.transition == ESCALATED:
        return (
            "发生",
            f"{when(alert.since_ms, tz)} 起，已持续{duration(step.at_ms - alert.since_ms)}",
        )
    if step.transition == ACKNOWLEDGED:
        return "确认", f"{when(step.at_ms, tz)} {step.by}"
    how = "自动恢复" if step.by == SYSTEM else f"{step.by} 处理"
    lasted = duration(step.at_ms - alert.since_ms)
    return "恢复", f"{when(step.at_ms, tz)}（{how}，持续{lasted}）"


def render(
    alert: Alert,
    step: AlertTransition,
    *,
    tz: ZoneInfo,
    base_url: str,
    told: Sequence[str] = (),
    snapshot: str | None = None,
) -> dict[str, Any]:
    """The content of every notification of one transition.

    ``told``: who got it before; ``snapshot``: the link to the frame behind it.
    """
    heading = _heading(alert, step)
    label, status = _status_line(alert, step, tz)
    link = alert_link(base_url, alert.id)
    lines = [f"### {heading}", f"**地点**：{alert.place}", f"**{label}**：{status}"]
    if step.transition in (OPENED, ESCALATED):
        lines.append(f"**处理**：{alert.action}")
    if step.transition == ESCALATED and told:
        lines.append(f"**已通知**：{'、'.join(told)}")
    if step.note:
        lines.append(f"**说明**：{step.note}")
    if snapshot:
        lines.append(f"[查看现场抓拍（已打码）]({snapshot})")
    lines.append(f"[查看告警 #{alert.id}]({link})")
    markdown = "\n\n".join(lines)
    if len(markdown.encode()) > MAX_MARKDOWN_BYTES:
        markdown = markdown.encode()[:MAX_MARKDOWN_BYTES].decode(errors="ignore")
    text = f"{SMS_SIGNATURE}{heading}。地点：{alert.place}。{label}：{status}。"
    if step.transition in (OPENED, ESCALATED):
        text += alert.action
    return {
        "title": heading,
        "markdown": markdown,
        "text": f"{text}详情：{link}" + (f" 抓拍：{snapshot}" if snapshot else ""),
        "event": event(alert, step, link, snapshot),
    }


def event(
    alert: Alert, step: AlertTransition, link: str, snapshot: str | None = None
) -> dict[str, Any]:
    """The transition as structured data (webhook body, MQTT payload)."""
    return {
        "alert_id": alert.id,
        "transition": step.transition,
        "at_ms": step.at_ms,
        "by": step.by,
        "note": step.note,
        "community": alert.community_id,
        "rule": alert.rule,
        "severity": alert.severity,
        "status": alert.status,
        "kind": alert.kind,
        "device_id": alert.device_id,
        "subject": alert.subject,
        "title": alert.title,
        "action": alert.action,
        "place": alert.place,
        "grid": alert.grid,
        "since_ms": alert.since_ms,
        "opened_ms": alert.opened_ms,
        "link": link,
        "snapshot_link": snapshot,
        "facts": alert.facts,
    }
