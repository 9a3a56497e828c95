"""Alerts: list and filter, read with history and notifications, acknowledge, comment, resolve.

People's actions go through the alerts service's own store (``alerts.store``),
so an acknowledgement from the API is the same transition, with the same
notifications and InfluxDB export, as one from the CLI.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session, selectinload

from alerts.engine import default_rules
from alerts.models import SEVERITIES, STATUSES, Alert, AlertNotification
from alerts.routing import Router
from alerts.store import AlertError, AlertStore
from api.access import Principal
from api.crud import Page, mask_phone
from api.deps import (
    Actor,
    CommunityQuery,
    CurrentUser,
    PagingDep,
    RowId,
    SessionDep,
    StateDep,
    community_filter,
)
from api.routes.snapshots import SnapshotPublic, linked_snapshots
from api.state import CACHED_PAGE_BYTES, AppState
from devices.contract import EPOCH_MS_MAX
from registry.models import Grid

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

Ms = Annotated[int, Field(ge=0, le=EPOCH_MS_MAX)]
Note = Annotated[str, Field(min_length=1, max_length=500)]


class AlertPublic(BaseModel):
    """An alert: what, where, since when, and where it stands."""

    id: int
    community: str
    rule: str
    kind: str
    severity: str
    status: str
    title: str
    action: str
    place: str
    grid: str | None
    device_id: str
    subject: str
    occurrences: int
    since_ms: int
    opened_ms: int
    last_ms: int
    acknowledged_ms: int | None
    acknowledged_by: str | None
    escalated_ms: int | None
    resolved_ms: int | None
    resolved_by: str | None
    parent_id: int | None
    facts: dict[str, Any]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": 12,
                    "community": "zjxc",
                    "rule": "door.forced",
                    "kind": "door",
                    "severity": "critical",
                    "status": "open",
                    "title": "单元门被强行打开",
                    "action": "请立即到现场查看，确认有无人员强行闯入；必要时报警（110）。",
                    "place": "张家新村 3号楼2单元",
                    "grid": "第一网格",
                    "device_id": "zjxc-door-b03-u2",
                    "subject": "zjxc-door-b03-u2",
                    "occurrences": 1,
                    "since_ms": 1795189230000,
                    "opened_ms": 1795189230000,
                    "last_ms": 1795189230000,
                    "acknowledged_ms": None,
                    "acknowledged_by": None,
                    "escalated_ms": None,
                    "resolved_ms": None,
                    "resolved_by": None,
                    "parent_id": None,
                    "facts": {},
                }
            ]
        }
    }


class TransitionPublic(BaseModel):
    """A step of the alert's life."""

    transition: str
    at_ms: int
    by: str
    note: str | None


class CommentPublic(BaseModel):
    """A remark on the alert."""

    at_ms: int
    by: str
    text: str


class NotificationPublic(BaseModel):
    """One message owed to one channel, and what became of it."""

    transition: str
    channel: str
    recipient: str
    target: str
    status: str
    attempts: int
    sent_ms: int | None
    last_error: str | None


class AlertDetail(AlertPublic):
    """An alert with its history, comments, notifications and the snapshots behind it."""

    transitions: list[TransitionPublic]
    comments: list[CommentPublic]
    notifications: list[NotificationPublic]
    snapshots: list[SnapshotPublic]


class NoteBody(BaseModel):
    """An optional note on an acknowledgement or resolution."""

    note: Note | None = None


class CommentBody(BaseModel):
    """A remark."""

    text: Annotated[str, Field(min_length=1, max_length=1000, examples=["门闭合器松动，已报修"])]


def alert_public(row: Alert) -> AlertPublic:
    """The public view of an alert row."""
    return AlertPublic(
        id=row.id,
        community=row.community_id,
        rule=row.rule,
        kind=row.kind,
        severity=row.severity,
        status=row.status,
        title=row.title,
        action=row.action,
        place=row.place,
        grid=row.grid,
        device_id=row.device_id,
        subject=row.subject,
        occurrences=row.occurrences,
        since_ms=row.since_ms,
        opened_ms=row.opened_ms,
        last_ms=row.last_ms,
        acknowledged_ms=row.acknowledged_ms,
        acknowledged_by=row.acknowledged_by,
        escalated_ms=row.escalated_ms,
        resolved_ms=row.resolved_ms,
        resolved_by=row.resolved_by,
        parent_id=row.parent_id,
        facts=row.facts,
    )


# A list reads rows of these columns, named as AlertPublic's fields, through the
# table (no ORM objects), and encodes the page with msgspec: its items are exactly
# AlertPublic's fields, so pydantic would only validate and copy them again.
_ALERTS = Alert.__table__
_COLUMN_OF = {"community": "community_id"}
_FIELDS = tuple(AlertPublic.model_fields)
_PUBLIC_COLUMNS = tuple(_ALERTS.c[_COLUMN_OF.get(name, name)].label(name) for name in _FIELDS)
# Each filter of a list, by the name of its bound parameter.
_FILTERS = {
    "community": _ALERTS.c.community_id == bindparam("community"),
    "grids": _ALERTS.c.grid.in_(bindparam("grids", expanding=True)),
    "severity": _ALERTS.c.severity.in_(bindparam("severity", expanding=True)),
    "status": _ALERTS.c.status.in_(bindparam("status", expanding=True)),
    "rule": _ALERTS.c.rule == bindparam("rule"),
    "device_id": _ALERTS.c.device_id == bindparam("device_id"),
    "since_ms": _ALERTS.c.opened_ms >= bindparam("since_ms"),
    "until_ms": _ALERTS.c.opened_ms < bindparam("until_ms"),
    "grid_community": _ALERTS.c.community_id == bindparam("grid_community"),
    "grid_name": _ALERTS.c.grid == bindparam("grid_name"),
}


@cache
def _list_statements(filters: frozenset[str]) -> tuple[Select[Any], Select[Any]]:
    """A page of a list with these filters, and its count, built once per combination.

    The values are bound parameters, so SQLAlchemy reuses its compiled form instead of
    building and keying new statements on every request (half the cost of a list).
    The page carries the list's length in its last column: one round trip, and a
    separate count only for an empty page.
    """
    ids = select(_ALERTS.c.id).where(*(_FILTERS[name] for name in sorted(filters)))
    count = select(func.count()).select_from(ids.subquery())
    # The page's ids first, then their rows: the ids come from an index, so a
    # community's older alerts are never read, let alone sorted.
    wanted = ids.order_by(_ALERTS.c.id.desc()).offset(bindparam("offset")).limit(bindparam("limit"))
    page = (
        select(*_PUBLIC_COLUMNS, count.scalar_subquery())
        .where(_ALERTS.c.id.in_(wanted.scalar_subquery()))
        .order_by(_ALERTS.c.id.desc())
    )
    return page, count


def _scoped(query: Select[Any], principal: Principal) -> Select[Any]:
    # Alerts name the grid they were routed to; a grid worker sees those of their grids.
    if principal.grid_scoped:
        return query.where(_ALERTS.c.grid.in_(principal.grid_names))
    return query


def _visible(session: Session, principal: Principal, alert_id: int) -> Alert:
    query = _scoped(select(Alert).where(Alert.id == alert_id), principal)
    if principal.community is not None:
        query = query.where(Alert.community_id == principal.community)
    alert: Alert | None = session.scalar(query.options(selectinload(Alert.transitions)))
    if alert is None:
        raise HTTPException(404, f"alert {alert_id} not found")
    return alert


@router.get("", response_model=Page[AlertPublic])
async def list_alerts(
    principal: CurrentUser,
    state: StateDep,
    paging: PagingDep,
    community: CommunityQuery = None,
    grid: RowId | None = None,
    severity: Annotated[list[str] | None, Query(description=f"any of {SEVERITIES}")] = None,
    status: Annotated[list[str] | None, Query(description=f"any of {STATUSES}")] = None,
    rule: Annotated[str | None, Query(pattern=r"^[a-z_]{1,16}\.[a-z_]{1,32}$")] = None,
    device_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    since_ms: Annotated[
        int | None, Query(ge=0, le=EPOCH_MS_MAX, description="opened at or after")
    ] = None,
    until_ms: Annotated[
        int | None, Query(ge=0, le=EPOCH_MS_MAX, description="opened before")
    ] = None,
) -> Response:
    """Alerts you may see, newest first, filtered."""
    values: dict[str, Any] = {
        "community": community_filter(principal, community),
        "grids": sorted(principal.grid_names) if principal.grid_scoped else None,
        "rule": rule,
        "device_id": device_id,
        "since_ms": since_ms,
        "until_ms": until_ms,
    }
    for name, chosen, allowed in (("severity", severity, SEVERITIES), ("status", status, STATUSES)):
        if chosen:
            unknown = sorted(set(chosen) - set(allowed))
            if unknown:
                raise HTTPException(422, f"unknown {name} {unknown}: one of {allowed}")
            values[name] = chosen
    params = {name: value for name, value in values.items() if value is not None}
    # The parameters hold the principal's whole scope (community, grids), so principals
    # of the same scope share pages.
    key = repr((sorted(params.items()), grid, paging.offset, paging.limit))
    cached = state.answers.alert_pages.get(key)
    if cached is not None:
        return Response(cached, media_type="application/json")

    def page(session: Session) -> bytes:
        if grid is not None:
            row = session.get(Grid, grid)
            if row is None or not principal.sees_community(row.community_id):
                raise HTTPException(404, f"grid {grid} not found")
            params.update(grid_community=row.community_id, grid_name=row.name)
        statement, count = _list_statements(frozenset(params))
        # Core on the session's connection: these are rows, not ORM objects.
        connection = session.connection()
        window = {"offset": paging.offset, "limit": paging.limit}
        rows = connection.execute(statement, params | window).all()
        total = rows[0][-1] if rows else connection.scalar(count, params)
        items = [dict(zip(_FIELDS, row[:-1], strict=True)) for row in rows]
        return msgspec.json.encode(
            {"items": items, "total": total or 0, "offset": paging.offset, "limit": paging.limit}
        )

    body = await state.read(page)
    if len(body) <= CACHED_PAGE_BYTES:
        state.answers.alert_pages.put(key, body)
    return Response(body, media_type="application/json")


@router.get("/{alert_id}", response_model=AlertDetail, responses={404: {}})
def read_alert(alert_id: RowId, principal: CurrentUser, session: SessionDep) -> AlertDetail:
    """One alert, with every transition, comment and notification."""
    alert = _visible(session, principal, alert_id)
    steps = {step.id: step.transition for step in alert.transitions}
    notifications = session.scalars(
        select(AlertNotification)
        .where(AlertNotification.alert_id == alert_id)
        .order_by(AlertNotification.id)
    )
    return AlertDetail(
        **alert_public(alert).model_dump(),
        transitions=[
            TransitionPublic(transition=s.transition, at_ms=s.at_ms, by=s.by, note=s.note)
            for s in alert.transitions
        ],
        comments=[CommentPublic(at_ms=c.at_ms, by=c.by, text=c.text) for c in alert.comments],
        notifications=[_notification(n, steps, principal) for n in notifications],
        snapshots=linked_snapshots(session, principal, alert),
    )


def _notification(
    row: AlertNotification, steps: dict[int, str], principal: Principal
) -> NotificationPublic:
    # The target is a phone (SMS) or a webhook URL whose query holds the robot's token.
    target = row.target
    if row.channel == "sms" and not principal.sees_personal_data:
        target = mask_phone(target) or ""
    elif target.startswith("http"):
        target = target.split("?", 1)[0]
    return NotificationPublic(
        transition=steps.get(row.transition_id, ""),
        channel=row.channel,
        recipient=row.recipient,
        target=target,
        status=row.status,
        attempts=row.attempts,
        sent_ms=row.sent_ms,
        last_error=row.last_error,
    )


def _act(
    state: AppState, principal: Principal, alert_id: int, action: str, text: str | None
) -> Alert:
    store = AlertStore(
        default_rules(),
        Router(),
        base_url=state.settings.alerts_base_url,
        wall=state.clock,
        links=state.links,
    )
    now = state.clock.now_ms()
    try:
        with state.database.write() as session:
            _visible(session, principal, alert_id)
            if action == "acknowledge":
                store.acknowledge(session, alert_id, principal.username, now, text)
            elif action == "resolve":
                store.resolve(session, alert_id, principal.username, now, text)
            else:
                store.comment(session, alert_id, principal.username, text or "", now)
    except AlertError as exc:
        raise HTTPException(409, str(exc)) from None
    finally:
        state.answers.alert_pages.clear()
    with state.sessions() as session:
        return _visible(session, principal, alert_id)


@router.post("/{alert_id}/acknowledge", response_model=AlertPublic, responses={404: {}, 409: {}})
def acknowledge(alert_id: RowId, body: NoteBody, principal: Actor, state: StateDep) -> AlertPublic:
    """Take the alert on (it stops escalating); 409 unless it is open."""
    return alert_public(_act(state, principal, alert_id, "acknowledge", body.note))


@router.post("/{alert_id}/resolve", response_model=AlertPublic, responses={404: {}, 409: {}})
def resolve(alert_id: RowId, body: NoteBody, principal: Actor, state: StateDep) -> AlertPublic:
    """Close the alert; 409 if it is already resolved."""
    return alert_public(_act(state, principal, alert_id, "resolve", body.note))


@router.post(
    "/{alert_id}/comments", response_model=AlertDetail, status_code=201, responses={404: {}}
)
def comment(
    alert_id: RowId, body: CommentBody, principal: Actor, state: StateDep, session: SessionDep
) -> AlertDetail:
    """Add a remark to the alert."""
    _act(state, principal, alert_id, "comment", body.text)
    return read_alert(alert_id, principal, session)
