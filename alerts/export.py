"""Alert transitions to InfluxDB, for Grafana's annotations and counts of open alerts.

Measurement ``alert_event``, one point per transition at its time. Tags:
``community``, ``rule``, ``severity``, ``kind``, ``transition`` (opened,
acknowledged, escalated, resolved). Fields: ``alert_id``, ``device_id``,
``subject``, ``place``, ``title`` (strings) and ``open`` (integer: +1 opened,
-1 resolved, 0 otherwise); for an alert that names a frame (a robot's),
``snapshot_link``: the signed link to its privacy version, which Grafana's
patrol dashboard opens (the browser sends no credentials).

``sum("open")`` over time is the number of open alerts. Transitions are marked
``exported`` once InfluxDB has them, so an outage delays them and loses none.
Two transitions of one series in the same millisecond would overwrite each
other (a burst of same-rule alerts): the later one is moved 1 ms on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from alerts.models import OPENED, RESOLVED, Alert, AlertTransition
from influx.client import InfluxClient, InfluxRejected
from influx.lineprotocol import Point, encode_point

log = logging.getLogger("gridwatch.alerts")

MEASUREMENT = "alert_event"
OPEN_DELTA = {OPENED: 1, RESOLVED: -1}
# The signed link to the frame an alert names, if any (``AlertStore.frame_link``).
FrameLink = Callable[[Session, Alert], str | None]
# Remember this many written times per series to move colliding points apart.
_REMEMBERED = 10_000


def alert_event_point(
    alert: Alert, step: AlertTransition, snapshot_link: str | None = None
) -> Point:
    """The point of one transition."""
    tags = {
        "community": alert.community_id,
        "rule": alert.rule,
        "severity": alert.severity,
        "kind": alert.kind,
        "transition": step.transition,
    }
    fields: dict[str, bool | int | float | str] = {
        "alert_id": str(alert.id),
        "device_id": alert.device_id,
        "subject": alert.subject,
        "place": alert.place,
        "title": alert.title,
        "open": OPEN_DELTA.get(step.transition, 0),
    }
    if snapshot_link is not None:
        fields["snapshot_link"] = snapshot_link
    return Point(MEASUREMENT, tags, fields, step.at_ms)


class TransitionExporter:
    """Writes the transitions InfluxDB does not have yet, oldest first."""

    def __init__(
        self, influx: InfluxClient, batch: int = 1000, frame_link: FrameLink | None = None
    ) -> None:
        self._influx = influx
        self._batch = batch
        self._frame_link = frame_link
        self._written: dict[tuple[tuple[str, str], ...], set[int]] = {}

    def export(self, session: Session) -> int:
        """Write one batch and mark it exported (in the caller's transaction); returns its size."""
        rows = session.execute(
            select(AlertTransition, Alert)
            .join(Alert, Alert.id == AlertTransition.alert_id)
            .where(AlertTransition.exported.is_(False))
            .order_by(AlertTransition.id)
            .limit(self._batch)
        ).all()
        if not rows:
            return 0
        lines = [
            encode_point(self._apart(alert_event_point(alert, step, self._link(session, alert))))
            for step, alert in rows
        ]
        try:
            self._influx.write("\n".join(lines).encode())
        except InfluxRejected as exc:  # the same body would fail again: do not block the rest
            log.error("InfluxDB refused %d alert events, dropped: %s", len(lines), exc)
        ids = [step.id for step, _ in rows]
        session.execute(
            update(AlertTransition).where(AlertTransition.id.in_(ids)).values(exported=True)
        )
        return len(rows)

    def _link(self, session: Session, alert: Alert) -> str | None:
        return None if self._frame_link is None else self._frame_link(session, alert)

    def _apart(self, point: Point) -> Point:
        series = tuple(sorted(point.tags.items()))
        taken = self._written.setdefault(series, set())
        if len(taken) > _REMEMBERED:
            taken.clear()
        time_ms = point.time_ms
        while time_ms in taken:
            time_ms += 1
        taken.add(time_ms)
        return Point(point.measurement, point.tags, point.fields, time_ms)
