"""The alert lifecycle in SQL: open → acknowledged → resolved, with who and when, and the outbox.

Every method works inside the caller's transaction, so a batch of messages, the
rule states they changed, the alerts they opened or resolved and the
notifications those owe are committed together, or not at all.

- A finding raised for a rule and subject with an alert still open counts on
  that alert (``occurrences``); otherwise it opens one.
- A cleared finding resolves the open alert, unless a latched finding (an
  event: forced door, detection) is on it: only a person resolves those.
- An alert filed under a group (a lamp under its circuit's alert) is kept, but
  only the group's alert is notified to people.
- Critical and major alerts nobody acknowledged escalate to the managers
  ``escalate_after_ms`` after they opened (event time).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable, Table, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from alerts.engine import StateRow
from alerts.messages import render
from alerts.models import (
    ACKNOWLEDGED,
    ESCALATED,
    OPEN,
    OPENED,
    PENDING,
    RESOLVED,
    SYSTEM,
    Alert,
    AlertComment,
    AlertNotification,
    AlertRuleState,
    AlertTransition,
)
from alerts.routing import MQTT, Recipient, Router
from alerts.rule import Finding, Rule, grouped
from gridwatch.clock import Clock
from imagery.files import Variant
from imagery.links import SnapshotLinks
from imagery.store import named_snapshot

DEFAULT_ESCALATE_AFTER_MS = 15 * 60_000
ESCALATING = ("critical", "major")


@dataclass(frozen=True, slots=True)
class _Step:
    """A transition decided for an alert, to be recorded once the new alerts have ids."""

    transition: str
    alert: Alert
    at_ms: int
    recipients: list[Recipient]
    group: Alert | None  # the open alert of the finding's group, when it opened
    members: list[Alert]  # for a group's alert: its members open when it opened


class AlertError(ValueError):
    """An operation the alert does not allow (unknown id, already resolved...)."""


class AlertStore:
    """Turns findings into alert transitions and owed notifications; people's actions too."""

    def __init__(
        self,
        rules: Iterable[Rule[Any, Any]],
        router: Router,
        *,
        base_url: str,
        wall: Clock,
        escalate_after_ms: int = DEFAULT_ESCALATE_AFTER_MS,
        links: SnapshotLinks | None = None,
    ) -> None:
        self._rules = {rule.id: rule for rule in rules}
        self._router = router
        self._base_url = base_url
        # The people notified open the frame without credentials: its link is signed.
        self._links = links or SnapshotLinks.ephemeral()
        self._wall = wall
        self._default_escalation = escalate_after_ms
        self._escalation: dict[str, int] = {}

    def set_escalation(self, per_community: Mapping[str, int]) -> None:
        """Communities whose settings override the escalation delay."""
        self._escalation = dict(per_community)

    def escalate_after_ms(self, community: str) -> int:
        """How long an alert of ``community`` may stay unacknowledged."""
        return self._escalation.get(community, self._default_escalation)

    # --- findings -----------------------------------------------------------------

    def apply(self, session: Session, findings: Sequence[Finding]) -> Counter[str]:
        """Open, count on, or resolve alerts as the findings say, in their order.

        Work in three rounds, so a burst costs a few statements, not a few per alert:
        decide every finding against the open alerts (one query), insert the new
        alerts (their ids), then record the transitions and the notifications they owe.
        Returns the transitions made, by name (``opened``, ``resolved``): for metrics.
        """
        if not findings:
            return Counter()
        open_alerts = self._open_alerts(session, findings)
        steps: list[_Step] = []
        for finding in findings:
            key = (finding.community, grouped(finding.rule, finding.subject))
            alert = open_alerts.get(key)
            if finding.raised and alert is not None:
                alert.occurrences += 1
                alert.last_ms = max(alert.last_ms, finding.ts)
                alert.auto_resolve = alert.auto_resolve and not finding.latch
            elif finding.raised:
                alert, recipients = self._new_alert(session, finding)
                group = open_alerts.get((finding.community, finding.group))
                members = [a for a in open_alerts.values() if a.group_key == alert.open_key]
                open_alerts[key] = alert
                steps.append(_Step(OPENED, alert, finding.ts, recipients, group, members))
            elif alert is not None and alert.auto_resolve:
                del open_alerts[key]
                at_ms = self._close(alert, finding.ts, SYSTEM)
                steps.append(_Step(RESOLVED, alert, at_ms, [], None, []))
        session.flush()  # the new alerts' ids
        for step in steps:
            if step.transition == OPENED:
                self._file_in_group(session, step)
                recipients = step.recipients
            else:
                recipients = self._told(session, step.alert.id)
            self._step(session, step.alert, step.transition, step.at_ms, SYSTEM, None, recipients)
        return Counter(step.transition for step in steps)

    def _open_alerts(
        self, session: Session, findings: Sequence[Finding]
    ) -> dict[tuple[str, str], Alert]:
        """The open alerts the findings (or their groups) are about, by (community, open_key)."""
        keys = {grouped(f.rule, f.subject) for f in findings} | {
            f.group for f in findings if f.group
        }
        communities = {f.community for f in findings}
        rows = session.scalars(
            select(Alert).where(Alert.open_key.in_(keys), Alert.community_id.in_(communities))
        )
        return {(a.community_id, a.open_key or ""): a for a in rows}

    def _new_alert(self, session: Session, finding: Finding) -> tuple[Alert, list[Recipient]]:
        rule = self._rules[finding.rule]
        building = finding.device.tags.get("building") if finding.device else None
        route = self._router.route(session, finding.community, building, finding.lat, finding.lon)
        alert = Alert(
            community_id=finding.community,
            rule=finding.rule,
            kind=finding.kind,
            subject=finding.subject,
            device_id=finding.device_id,
            severity=finding.severity.value,
            status=OPEN,
            title=rule.title(finding.facts),
            action=rule.action(finding.facts),
            place=self._place(session, finding, route.near),
            grid=route.grid,
            lat=finding.lat,
            lon=finding.lon,
            facts=dict(finding.facts),
            open_key=grouped(finding.rule, finding.subject),
            group_key=finding.group or None,
            auto_resolve=not finding.latch,
            occurrences=1,
            since_ms=finding.since_ms,
            opened_ms=finding.ts,
            last_ms=finding.ts,
        )
        session.add(alert)
        return alert, route.recipients

    def _file_in_group(self, session: Session, step: _Step) -> None:
        """A member goes under its group's open alert; a group adopts its members already open."""
        alert = step.alert
        if step.group is not None:
            alert.parent_id = step.group.id
        for member in step.members:  # those this batch knows about
            member.parent_id = alert.id
        if self._rules[alert.rule].listens_to:  # and those only the database knows about
            session.execute(
                update(Alert)
                .where(
                    Alert.community_id == alert.community_id,
                    Alert.group_key == alert.open_key,
                    Alert.open_key.is_not(None),
                    Alert.id != alert.id,
                )
                .values(parent_id=alert.id)
            )

    def _place(self, session: Session, finding: Finding, near: str) -> str:
        """张家新村 3号楼2单元501; things placed only by position say which building is near."""
        words = finding.place
        if near and finding.device_id:
            words = f"{words}（{near}）" if words else near
        name = self._router.book(session, finding.community).name
        return f"{name} {words}".strip()

    # --- escalation ---------------------------------------------------------------

    def escalate(self, session: Session, now_ms: int) -> int:
        """Escalate what waited too long for an acknowledgement; returns how many."""
        shortest = min([self._default_escalation, *self._escalation.values()])
        candidates = session.scalars(
            select(Alert)
            .where(
                Alert.status == OPEN,
                Alert.severity.in_(ESCALATING),
                Alert.escalated_ms.is_(None),
                Alert.parent_id.is_(None),
                Alert.opened_ms <= now_ms - shortest,
            )
            .order_by(Alert.id)
        ).all()
        escalated = 0
        for alert in candidates:
            due = alert.opened_ms + self.escalate_after_ms(alert.community_id)
            if due <= now_ms:
                alert.escalated_ms = due
                managers = self._router.book(session, alert.community_id).managers()
                self._step(session, alert, ESCALATED, due, SYSTEM, None, managers)
                escalated += 1
        return escalated

    # --- people's actions ---------------------------------------------------------

    def acknowledge(
        self, session: Session, alert_id: int, by: str, at_ms: int, note: str | None = None
    ) -> Alert:
        """Someone has taken the alert on; it stops escalating."""
        alert = self._get(session, alert_id)
        if alert.status != OPEN:
            raise AlertError(f"alert #{alert_id} is {alert.status}, not open")
        alert.status = ACKNOWLEDGED
        alert.acknowledged_ms = at_ms
        alert.acknowledged_by = by
        self._step(session, alert, ACKNOWLEDGED, at_ms, by, note, [])
        return alert

    def resolve(
        self, session: Session, alert_id: int, by: str, at_ms: int, note: str | None = None
    ) -> Alert:
        """Someone closes the alert (whatever the condition does next)."""
        alert = self._get(session, alert_id)
        if alert.status == RESOLVED:
            raise AlertError(f"alert #{alert_id} is already resolved")
        self._resolve(session, alert, at_ms, by, note)
        return alert

    def comment(
        self, session: Session, alert_id: int, by: str, text: str, at_ms: int
    ) -> AlertComment:
        """Add a remark to an alert."""
        self._get(session, alert_id)
        remark = AlertComment(alert_id=alert_id, at_ms=at_ms, by=by, text=text)
        session.add(remark)
        return remark

    def _get(self, session: Session, alert_id: int) -> Alert:
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise AlertError(f"no alert #{alert_id}")
        return alert

    def _resolve(
        self, session: Session, alert: Alert, at_ms: int, by: str, note: str | None
    ) -> None:
        at_ms = self._close(alert, at_ms, by)
        self._step(session, alert, RESOLVED, at_ms, by, note, self._told(session, alert.id))

    @staticmethod
    def _close(alert: Alert, at_ms: int, by: str) -> int:
        """Mark the alert resolved; returns when (never before it opened: a late message)."""
        at_ms = max(at_ms, alert.opened_ms)
        alert.status = RESOLVED
        alert.resolved_ms = at_ms
        alert.resolved_by = by
        alert.open_key = None
        return at_ms

    def frame_link(self, session: Session, alert: Alert, now_ms: int) -> str | None:
        """The signed link to the frame the alert names (its privacy version), if it names one."""
        frame = named_snapshot(session, alert)
        if frame is None:
            return None
        return self._links.link(session, self._base_url, frame, Variant.PRIVACY, now_ms)

    def _told(self, session: Session, alert_id: int) -> list[Recipient]:
        """The people (with their channels) who were notified of this alert."""
        rows = session.execute(
            select(AlertNotification.recipient, AlertNotification.config)
            .where(AlertNotification.alert_id == alert_id, AlertNotification.channel != MQTT)
            .order_by(AlertNotification.id)
        )
        return [Recipient(name, config) for name, config in rows]

    # --- transitions and the outbox -----------------------------------------------

    def _step(
        self,
        session: Session,
        alert: Alert,
        transition: str,
        at_ms: int,
        by: str,
        note: str | None,
        recipients: Sequence[Recipient],
    ) -> AlertTransition:
        """Record a transition and the notifications it owes (people only for top-level alerts)."""
        step = AlertTransition(
            alert_id=alert.id, transition=transition, at_ms=at_ms, by=by, note=note
        )
        session.add(step)
        book = self._router.book(session, alert.community_id)
        told = [] if transition != ESCALATED else self._told(session, alert.id)
        now = self._wall.now_ms()
        content = render(
            alert,
            step,
            tz=book.tz,
            base_url=self._base_url,
            told=list(dict.fromkeys(r.name for r in told)),
            snapshot=self.frame_link(session, alert, now),
        )
        # A member of a group (a lamp under its circuit) tells people nothing new, but
        # whoever heard of it before the group formed hears that it is over.
        people = recipients if alert.parent_id is None or transition == RESOLVED else []
        seen: set[tuple[str, str]] = set()
        # The control room last: in a burst, every alert's first person is told first.
        for recipient in (*people, book.control_room()):
            destination = (recipient.channel, recipient.target)
            if destination in seen:  # two workers in one group chat: post once
                continue
            seen.add(destination)
            session.add(
                AlertNotification(
                    alert_id=alert.id,
                    transition=step,
                    channel=recipient.channel,
                    target=recipient.target,
                    recipient=recipient.name,
                    config=dict(recipient.config),
                    content=content,
                    status=PENDING,
                    attempts=0,
                    created_ms=now,
                    next_attempt_ms=now,
                )
            )
        return step


# --- rule state ---------------------------------------------------------------------


def save_states(session: Session, rows: Sequence[StateRow]) -> None:
    """Upsert changed rule states and delete the ones back to idle, in one round trip each."""
    gone = [(row.rule, row.key) for row in rows if row.state is None]
    kept = [
        {
            "rule": row.rule,
            "key": row.key,
            "community_id": row.community,
            "state": row.state,
            "due_ms": row.due_ms,
        }
        for row in rows
        if row.state is not None
    ]
    table = AlertRuleState.metadata.tables[AlertRuleState.__tablename__]
    if gone:
        forget = delete(table).where(
            table.c.rule == bindparam("gone_rule"), table.c.key == bindparam("gone_key")
        )
        session.execute(forget, [{"gone_rule": rule, "gone_key": key} for rule, key in gone])
    if kept:
        session.execute(_upsert(session.get_bind().dialect.name, table), kept)


def _upsert(dialect: str, table: Table) -> Executable:
    """INSERT ... ON CONFLICT (rule, key) DO UPDATE: both SQLite and PostgreSQL have it."""
    columns = ("community_id", "state", "due_ms")
    if dialect == "postgresql":
        pg = postgresql.insert(table)
        return pg.on_conflict_do_update(
            index_elements=["rule", "key"], set_={c: pg.excluded[c] for c in columns}
        )
    lite = sqlite.insert(table)
    return lite.on_conflict_do_update(
        index_elements=["rule", "key"], set_={c: lite.excluded[c] for c in columns}
    )


def load_states(session: Session) -> list[StateRow]:
    """Every persisted rule state."""
    rows = session.execute(
        select(
            AlertRuleState.rule,
            AlertRuleState.key,
            AlertRuleState.community_id,
            AlertRuleState.state,
            AlertRuleState.due_ms,
        )
    )
    return [StateRow(rule, key, community, state, due) for rule, key, community, state, due in rows]
