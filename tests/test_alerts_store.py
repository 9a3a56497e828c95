"""The alert lifecycle and its store on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from alerts.directory import escalation_overrides, load_directory
from alerts.engine import StateRow, default_rules
from alerts.models import Alert, AlertComment, AlertNotification, AlertTransition
from alerts.routing import Router
from alerts.rule import Finding, Severity
from alerts.store import AlertError, AlertStore, load_states, save_states
from devices.contract import DeviceRecord
from gridwatch.clock import ManualClock
from registry.db import make_engine, make_sessionmaker
from registry.importer import import_document
from tests.alerts_cases.harness import DATABASES, fresh_database

T0 = 1_795_000_000_000
MINUTE = 60_000


def community(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Two grids, a manager, a worker off duty; a door, a meter and a lamp."""
    return {
        "community": {
            "id": "tiny",
            "name": "小小区",
            "lat": 36.8,
            "lon": 118.0,
            "settings": {"alerts": settings or {}},
        },
        "managers": [
            {
                "name": "孙主任",
                "phone": "13800000000",
                "channels": [{"type": "wecom", "url": "http://127.0.0.1:9/wecom/boss"}],
            }
        ],
        "grids": [
            {
                "id": "g1",
                "name": "第一网格",
                "workers": [
                    {
                        "name": "李秀梅",
                        "phone": "13800000001",
                        "channels": [
                            {"type": "sms", "url": "http://127.0.0.1:9/sms"},
                            {"type": "wecom", "url": "http://127.0.0.1:9/wecom/g1"},
                        ],
                    },
                    {
                        "name": "王建军",
                        "phone": "13800000002",
                        "channels": [{"type": "wecom", "url": "http://127.0.0.1:9/wecom/g1"}],
                    },
                    {"name": "休假", "phone": "13800000003", "on_duty": False,
                     "channels": [{"type": "sms", "url": "http://127.0.0.1:9/sms"}]},
                ],
            },
            {
                "id": "g2",
                "name": "第二网格",
                "workers": [
                    {
                        "name": "张丽娜",
                        "phone": "13800000004",
                        "channels": [
                            {"type": "dingtalk", "url": "http://127.0.0.1:9/ding", "secret": "s"}
                        ],
                    }
                ],
            },
        ],
        "buildings": [
            {"number": 3, "grid": "g1", "lat": 36.8000, "lon": 118.0000,
             "units": [{"number": 2, "households": 12, "rooms": [{"room": 501}]}]},
            {"number": 9, "grid": "g2", "lat": 36.8100, "lon": 118.0100, "units": []},
        ],
        "devices": [
            {"id": "tiny-door", "kind": "door", "building": 3, "unit": 2},
            {"id": "tiny-wm", "kind": "water_meter", "building": 3, "unit": 2, "room": 501},
            {"id": "tiny-lamp", "kind": "streetlight", "lat": 36.8099, "lon": 118.0099,
             "place": "B回路 7号灯", "attributes": {"circuit": "B", "rated_power_w": 80}},
        ],
    }  # fmt: skip


@pytest.fixture(params=DATABASES)
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """Sessions on a fresh database: SQLite, then the real PostgreSQL."""
    for url in fresh_database(request, tmp_path):
        engine = make_engine(url)
        yield make_sessionmaker(engine)
        engine.dispose()


@pytest.fixture
def tiny(sessions: sessionmaker[Session]) -> Iterator[tuple[sessionmaker[Session], AlertStore]]:
    """The small community imported, and a store over it."""
    with sessions.begin() as session:
        import_document(session, community({"escalate_after_min": 30}))
    store = AlertStore(
        default_rules(), Router(), base_url="http://gw.example/", wall=ManualClock(T0)
    )
    with sessions() as session:
        store.set_escalation(escalation_overrides(load_directory(session)))
    yield sessions, store


def record(sessions: sessionmaker[Session], device_id: str) -> DeviceRecord:
    """A device as the engine has it."""
    with sessions() as session:
        return load_directory(session).devices[device_id]


def finding(device: DeviceRecord, rule: str, ts: int, **kw: Any) -> Finding:
    """A finding about ``device``."""
    values: dict[str, Any] = {
        "rule": rule,
        "community": device.community,
        "subject": device.device_id,
        "kind": device.kind,
        "raised": True,
        "ts": ts,
        "severity": Severity.MAJOR,
        "device": device,
        "device_id": device.device_id,
        "since_ms": ts,
        "place": device.place,
        "lat": device.lat,
        "lon": device.lon,
    }
    return Finding(**(values | kw))


def apply(tiny: tuple[sessionmaker[Session], AlertStore], *findings: Finding) -> None:
    """Apply findings in one transaction."""
    sessions, store = tiny
    with sessions.begin() as session:
        store.apply(session, findings)


def outbox(session: Session) -> list[tuple[str, str, str, str]]:
    """(transition, channel, target, recipient) of every notification, in order."""
    rows = session.execute(
        select(
            AlertTransition.transition,
            AlertNotification.channel,
            AlertNotification.target,
            AlertNotification.recipient,
        )
        .join(AlertTransition, AlertTransition.id == AlertNotification.transition_id)
        .order_by(AlertNotification.id)
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]


def test_open_count_resolve_and_notify_the_grid(
    tiny: tuple[sessionmaker[Session], AlertStore],
) -> None:
    sessions, _ = tiny
    door = record(sessions, "tiny-door")
    apply(tiny, finding(door, "door.held_open", T0, facts={"minutes": 3}))
    apply(tiny, finding(door, "door.held_open", T0 + MINUTE))
    apply(tiny, finding(door, "door.held_open", T0 + 5 * MINUTE, raised=False))
    with sessions() as session:
        (alert,) = session.scalars(select(Alert)).all()
        assert (alert.status, alert.occurrences, alert.resolved_by) == ("resolved", 2, "system")
        assert (alert.place, alert.grid, alert.open_key) == ("小小区 3号楼2单元", "第一网格", None)
        assert alert.title == "单元门长时间未关（已开3分钟）"
        assert [t.transition for t in alert.transitions] == ["opened", "resolved"]
        told = [
            ("sms", "13800000001", "李秀梅"),
            ("wecom", "http://127.0.0.1:9/wecom/g1", "李秀梅"),  # one post for the shared group
            ("mqtt", "sc/tiny/alerts", "监控室"),
        ]
        assert outbox(session) == [("opened", *t) for t in told] + [("resolved", *t) for t in told]
        content = session.scalars(select(AlertNotification.content)).first()
        assert content is not None
        assert content["markdown"].startswith("### 【重要】单元门长时间未关")
        assert "http://gw.example/alerts/" in content["text"]


def test_a_latched_alert_waits_for_a_person(tiny: tuple[sessionmaker[Session], AlertStore]) -> None:
    sessions, store = tiny
    door = record(sessions, "tiny-door")
    apply(tiny, finding(door, "door.forced", T0, latch=True, severity=Severity.CRITICAL))
    apply(tiny, finding(door, "door.forced", T0 + MINUTE, raised=False))
    with sessions.begin() as session:
        alert = session.scalars(select(Alert)).one()
        assert alert.status == "open"
        store.acknowledge(session, alert.id, "李秀梅", T0 + 2 * MINUTE)
        store.comment(session, alert.id, "李秀梅", "门已关好，无人闯入", T0 + 3 * MINUTE)
        store.resolve(session, alert.id, "李秀梅", T0 + 4 * MINUTE, note="误报：风吹开")
    with sessions() as session:
        alert = session.scalars(select(Alert)).one()
        steps = [(t.transition, t.by, t.note) for t in alert.transitions]
        assert steps == [
            ("opened", "system", None),
            ("acknowledged", "李秀梅", None),
            ("resolved", "李秀梅", "误报：风吹开"),
        ]
        assert [c.text for c in session.scalars(select(AlertComment))] == ["门已关好，无人闯入"]
        # An acknowledgement goes to the control room only.
        assert [o for o in outbox(session) if o[0] == "acknowledged"] == [
            ("acknowledged", "mqtt", "sc/tiny/alerts", "监控室")
        ]
        resolved = session.scalars(
            select(AlertNotification.content).where(AlertNotification.channel == "sms")
        ).all()[-1]
        assert resolved["title"] == "【已处理】单元门被强行打开"
        with pytest.raises(AlertError, match="already resolved"):
            store.resolve(session, alert.id, "x", T0)
        with pytest.raises(AlertError, match="not open"):
            store.acknowledge(session, alert.id, "x", T0)
        with pytest.raises(AlertError, match="no alert"):
            store.comment(session, 999, "x", "?", T0)


def test_unacknowledged_alerts_escalate_to_the_managers(
    tiny: tuple[sessionmaker[Session], AlertStore],
) -> None:
    sessions, store = tiny
    door, meter = record(sessions, "tiny-door"), record(sessions, "tiny-wm")
    apply(
        tiny,
        finding(door, "door.forced", T0, latch=True, severity=Severity.CRITICAL),
        finding(meter, "water.tamper", T0, severity=Severity.MINOR),
        finding(meter, "water.no_use", T0, severity=Severity.CRITICAL),
    )
    with sessions.begin() as session:
        no_use = session.scalars(select(Alert).where(Alert.rule == "water.no_use")).one()
        store.acknowledge(session, no_use.id, "李秀梅", T0 + MINUTE)
        assert store.escalate(session, T0 + 29 * MINUTE) == 0  # this community waits 30 min
        assert store.escalate(session, T0 + 45 * MINUTE) == 1
        assert store.escalate(session, T0 + 60 * MINUTE) == 0  # once
    with sessions() as session:
        forced = session.scalars(select(Alert).where(Alert.rule == "door.forced")).one()
        assert forced.escalated_ms == T0 + 30 * MINUTE
        escalations = [o for o in outbox(session) if o[0] == "escalated"]
        assert escalations == [
            ("escalated", "wecom", "http://127.0.0.1:9/wecom/boss", "孙主任"),
            ("escalated", "mqtt", "sc/tiny/alerts", "监控室"),
        ]
        content = session.scalars(
            select(AlertNotification.content).where(AlertNotification.recipient == "孙主任")
        ).one()
        assert content["title"] == "【升级·紧急】单元门被强行打开（30分钟无人确认）"
        assert "**已通知**：李秀梅" in content["markdown"]


def test_a_lamp_goes_to_the_grid_of_the_nearest_building(
    tiny: tuple[sessionmaker[Session], AlertStore],
) -> None:
    sessions, _ = tiny
    lamp = record(sessions, "tiny-lamp")
    apply(tiny, finding(lamp, "light.failure", T0, facts={"cause": "dark", "power": 0.4,
                                                          "rated": 80.0}))  # fmt: skip
    with sessions() as session:
        alert = session.scalars(select(Alert)).one()
        assert (alert.place, alert.grid) == ("小小区 B回路 7号灯（9号楼附近）", "第二网格")
        assert alert.title == "路灯不亮（功率0W，额定80W）"
        assert [o[1:] for o in outbox(session)] == [
            ("dingtalk", "http://127.0.0.1:9/ding", "张丽娜"),
            ("mqtt", "sc/tiny/alerts", "监控室"),
        ]


def test_a_group_adopts_its_open_members_and_silences_new_ones(
    tiny: tuple[sessionmaker[Session], AlertStore],
) -> None:
    sessions, _ = tiny
    lamp = record(sessions, "tiny-lamp")
    group = "light.circuit_down:B"
    apply(tiny, finding(lamp, "light.failure", T0, group=group))
    circuit = finding(lamp, "light.circuit_down", T0 + MINUTE, subject="B", device_id="",
                      place="B回路", severity=Severity.CRITICAL, facts={"circuit": "B",
                                                                        "lamps": 3})  # fmt: skip
    apply(tiny, circuit, finding(lamp, "device.offline", T0 + MINUTE, group=group))
    with sessions() as session:
        alerts = {a.rule: a for a in session.scalars(select(Alert))}
        parent = alerts["light.circuit_down"]
        assert parent.place == "小小区 B回路" and parent.title == "B回路停电：3盏路灯同时故障"
        assert alerts["light.failure"].parent_id == parent.id  # adopted
        assert alerts["device.offline"].parent_id == parent.id  # born under it
        people = {
            a.rule
            for a in session.scalars(
                select(Alert).join(AlertNotification, AlertNotification.alert_id == Alert.id)
                .where(AlertNotification.channel != "mqtt")
            )
        }  # fmt: skip
        assert people == {"light.failure", "light.circuit_down"}  # the lamp before its circuit


def test_one_open_alert_per_rule_and_subject_is_enforced_by_the_database(
    tiny: tuple[sessionmaker[Session], AlertStore],
) -> None:
    sessions, _ = tiny
    apply(tiny, finding(record(sessions, "tiny-door"), "door.tamper", T0, latch=True))
    with sessions() as session:
        first = session.scalars(select(Alert)).one()
        copy = {c.name: getattr(first, c.name) for c in Alert.__table__.columns if c.name != "id"}
        session.add(Alert(**copy))
        with pytest.raises(IntegrityError):
            session.flush()


def test_rule_states_round_trip(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        import_document(session, community())
    rows = [
        StateRow("device.offline", "tiny-door", "tiny", {"last_seen": T0, "active": False}, T0 + 1),
        StateRow("water.no_use", "tiny-wm", "tiny", {"total": 1.5, "since": T0}, None),
    ]
    with sessions.begin() as session:
        save_states(session, rows)
    with sessions.begin() as session:
        save_states(
            session,
            [
                StateRow("device.offline", "tiny-door", "tiny", {"last_seen": T0 + 5}, T0 + 9),
                StateRow("water.no_use", "tiny-wm", "tiny", None, None),
            ],
        )
    with sessions() as session:
        assert load_states(session) == [
            StateRow("device.offline", "tiny-door", "tiny", {"last_seen": T0 + 5}, T0 + 9)
        ]
        assert session.scalar(select(func.count()).select_from(Alert)) == 0
