"""The rule engine on its own: event time, timers, restarts, settings, grouping (no servers)."""

from __future__ import annotations

import json
from typing import Any

from alerts.engine import Directory, Engine, default_rules
from alerts.rule import Finding, Severity
from alerts.site import Site
from devices import KINDS
from devices.contract import Community, DeviceRecord
from tests.contract_helpers import ATTRIBUTES, TAGS

COMMUNITY = Community(id="zjxc", name="张家新村", lat=36.8131, lon=118.0549)
T0 = 1_795_000_000_000  # 2026-11-18 16:26:40 +08:00
MINUTE = 60_000


def device(kind: str, device_id: str, **attributes: Any) -> DeviceRecord:
    """A device of the test community."""
    return DeviceRecord(
        device_id=device_id,
        community=COMMUNITY.id,
        kind=kind,
        place="3号楼2单元",
        lat=36.8131,
        lon=118.0549,
        tags=TAGS[kind],
        attributes={**ATTRIBUTES[kind], **attributes},
    )


def engine(*devices: DeviceRecord, settings: dict[str, Any] | None = None) -> Engine:
    """An engine over these devices, with every rule."""
    site = Site(COMMUNITY, settings or {})
    return Engine(default_rules(), Directory({d.device_id: d for d in devices}, {"zjxc": site}))


def send(eng: Engine, record: DeviceRecord, channel: str, ts: int, **payload: Any) -> None:
    """Deliver one message as it arrives at ``ts``."""
    body = json.dumps({"ts": ts, "seq": 1, **payload}).encode()
    topic = f"sc/{record.community}/{record.kind}/{record.device_id}/{channel}"
    eng.handle(topic, body, ts)


def door_reading(eng: Engine, door: DeviceRecord, ts: int, *, is_open: bool = False) -> None:
    """A door heartbeat."""
    send(eng, door, "telemetry", ts, locked=not is_open, open=is_open, rssi_dbm=-60, temp_c=12.0)


def raised(findings: list[Finding]) -> list[tuple[str, str, int]]:
    """(rule, subject, ts) of the raised findings."""
    return [(f.rule, f.subject, f.ts) for f in findings if f.raised]


def test_silence_fires_at_three_intervals_after_the_last_message() -> None:
    door = device("door", "d1")
    eng = engine(door)
    for minute in range(5):
        door_reading(eng, door, T0 + minute * MINUTE)
    eng.advance(T0 + 7 * MINUTE - 1)
    assert raised(eng.take_findings()) == []
    eng.advance(T0 + 7 * MINUTE)
    (finding,) = eng.take_findings()
    assert (finding.rule, finding.ts, finding.since_ms) == (
        "device.offline",
        T0 + 7 * MINUTE,
        T0 + 4 * MINUTE,
    )
    assert finding.severity is Severity.MAJOR
    door_reading(eng, door, T0 + 8 * MINUTE)
    (cleared,) = eng.take_findings()
    assert (cleared.rule, cleared.raised) == ("device.offline", False)


def test_a_late_device_is_not_judged_silent_before_its_messages_are_in() -> None:
    # Two doors over two connections: d2's messages come in late (a replay at 3000x),
    # but event time only moves when the caller says all connections have delivered.
    d1, d2 = device("door", "d1"), device("door", "d2")
    eng = engine(d1, d2)
    for minute in range(10):
        door_reading(eng, d1, T0 + minute * MINUTE)
    for minute in range(10):
        door_reading(eng, d2, T0 + minute * MINUTE)
    eng.advance()
    assert raised(eng.take_findings()) == []
    # A door's own timers still fire before its own next message.
    door_reading(eng, d1, T0 + 15 * MINUTE)
    assert raised(eng.take_findings()) == [("device.offline", "d1", T0 + 12 * MINUTE)]


def test_a_last_will_in_a_replay_happens_in_event_time() -> None:
    # The will has no ts; it arrives at the wall clock's now, a day past the replayed stream.
    door = device("door", "d1")
    eng = engine(door)
    door_reading(eng, door, T0)
    eng.handle("sc/zjxc/door/d1/status", b'{"online": false}', T0 + 86_400_000)
    eng.advance()
    assert (raised(eng.take_findings()), eng.newest_ms) == ([("device.offline", "d1", T0)], T0)


def test_frequent_reports_keep_about_one_timer_per_device() -> None:
    robot = device("patrol_robot", "r1")
    eng = engine(robot)
    for second in range(0, 3600, 5):
        send(eng, robot, "telemetry", T0 + second * 1000, mode="idle", battery_pct=90,
             lat=36.8131, lon=118.0549, speed_mps=0.0)  # fmt: skip
    assert len(eng._timers) <= 4  # offline, coverage, and at most a stale entry or two


def test_a_fast_device_clock_does_not_drag_event_time_forward() -> None:
    door, fast = device("door", "d1"), device("door", "d2")
    eng = engine(door, fast)
    door_reading(eng, door, T0)
    # d2's clock is 9 minutes ahead: its message must not make d1 look silent.
    body = json.dumps({"ts": T0 + 9 * MINUTE, "seq": 1, "locked": True, "open": False,
                       "rssi_dbm": -60, "temp_c": 12.0}).encode()  # fmt: skip
    eng.handle("sc/zjxc/door/d2/telemetry", body, T0 + MINUTE)
    assert eng.newest_ms == T0 + MINUTE + 5_000
    eng.advance()
    assert raised(eng.take_findings()) == []


def test_restored_state_fires_on_time_in_a_new_engine() -> None:
    meter = device("water_meter", "w1", care={"no_use_hours": 6})
    eng = engine(meter)
    send(eng, meter, "telemetry", T0, total_l=100.0, flow_lpm=0.0, battery_pct=80, valve="open")
    rows = eng.take_changes()
    assert {row.rule for row in rows} == {"water.no_use", "device.offline"}
    again = engine(meter)
    assert again.restore(rows) == 2
    again.advance(T0 + 6 * 60 * MINUTE)
    assert ("water.no_use", "w1", T0 + 6 * 60 * MINUTE) in raised(again.take_findings())


def test_community_settings_override_and_disable_rules() -> None:
    door = device("door", "d1")
    settings = {"door.held_open": {"after_s": 60}, "device.offline": {"enabled": False}}
    eng = engine(door, settings=settings)
    door_reading(eng, door, T0, is_open=True)
    eng.advance(T0 + 10 * MINUTE)
    assert raised(eng.take_findings()) == [("door.held_open", "d1", T0 + MINUTE)]


def test_bad_settings_fall_back_to_the_defaults() -> None:
    door = device("door", "d1")
    eng = engine(door, settings={"door.held_open": {"after_seconds": 60}})
    door_reading(eng, door, T0, is_open=True)
    eng.advance(T0 + 2 * MINUTE)
    door_reading(eng, door, T0 + 2 * MINUTE, is_open=True)
    eng.advance(T0 + 3 * MINUTE)
    assert raised(eng.take_findings()) == [("door.held_open", "d1", T0 + 3 * MINUTE)]


def test_a_circuit_alert_comes_before_the_lamp_it_absorbs() -> None:
    lamps = [device("streetlight", f"l{i}", circuit="B", rated_power_w=100.0) for i in range(3)]
    eng = engine(*lamps)
    night = T0 + 6 * 60 * MINUTE  # 22:26 local
    for i, lamp in enumerate(lamps):
        send(eng, lamp, "telemetry", night + i * 1000, on=True, dim_pct=100, voltage_v=220.0,
             current_a=0.0, power_w=0.4, energy_kwh=10.0, lux=2.0)  # fmt: skip
    findings = eng.take_findings()
    assert [(f.rule, f.subject) for f in findings] == [
        ("light.failure", "l0"),
        ("light.failure", "l1"),
        ("light.circuit_down", "B"),
        ("light.failure", "l2"),
    ]
    assert [f.group for f in findings] == ["light.circuit_down:B"] * 2 + [
        "",
        "light.circuit_down:B",
    ]
    assert findings[2].severity is Severity.CRITICAL and findings[2].device_id == ""


def test_every_rule_of_product_md_exists_once() -> None:
    ids = [rule.id for rule in default_rules()]
    assert sorted(ids) == sorted(
        [
            "door.forced", "door.tamper", "door.held_open", "door.brute_force",
            "light.failure", "light.circuit_down", "light.day_burning", "light.voltage",
            "water.no_use", "water.continuous_flow", "water.tamper",
            "robot.scene", "robot.stuck", "robot.battery", "robot.coverage", "robot.camera",
            "device.offline",
        ]
    )  # fmt: skip
    assert all(KINDS[kind].rules for kind in KINDS)


def test_imagery_checkpoint_evidence_is_no_sign_of_the_robots_life() -> None:
    # A backlog of snapshots: the imagery service publishes a checkpoint the robot passed
    # before it fell silent, on the robot's own topic, after the offline alert opened.
    robot = device("patrol_robot", "r1")
    eng = engine(robot)
    send(eng, robot, "telemetry", T0, mode="charging", battery_pct=90,
         lat=36.8131, lon=118.0549, speed_mps=0.0)  # fmt: skip
    eng.advance(T0 + 4 * 60 * MINUTE)
    assert raised(eng.take_findings()) == [("device.offline", "r1", T0 + 3 * MINUTE)]
    evidence = {"ts": T0, "seq": 0, "event": "checkpoint", "checkpoint_id": "cp-01",
                "source": "imagery", "snapshot_id": "snap-1"}  # fmt: skip
    eng.handle("sc/zjxc/patrol_robot/r1/event", json.dumps(evidence).encode(), T0 + 4 * 60 * MINUTE)
    assert eng.take_findings() == []  # still offline
    coverage = eng._slots[("robot.coverage", "r1")].state
    assert "cp-01" in coverage.passed
    # The robot's own checkpoint event is its word: it is back.
    send(eng, robot, "event", T0 + 4 * 60 * MINUTE, event="checkpoint", checkpoint_id="cp-02")
    assert [(f.rule, f.raised) for f in eng.take_findings()] == [("device.offline", False)]
