"""Simulated devices: deterministic, plausible, and obedient to commands (no broker needed).

The behaviour tests are statistical: days or weeks of one device, checked
against what a control room would expect to see (PRODUCT.md, the issue).
"""

from __future__ import annotations

import itertools
import json
import random
import re
import statistics
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from astral import Observer
from astral.sun import sunrise, sunset

from devices import KINDS
from devices.contract import Channel, Command, DeviceRecord
from devices.patrol_robot.simulate import SPEED_MPS, SimulatedPatrolRobot, distance_m
from gridwatch.clock import ManualClock, SimulatedClock
from imagery.pipeline import Limits as ImageryLimits
from imagery.pipeline import Processor
from imagery.privacy import DetectorSettings
from imagery.quality import QualityThresholds
from simulators.engine import Report, Simulation
from simulators.memory import MemoryTransport, Message
from simulators.runner import Plan, Progress, summary
from tests.contract_helpers import COMMUNITY, NOW_MS, record, sample_payloads

TZ = ZoneInfo("Asia/Shanghai")
DAY = 24
Body = dict[str, Any]


def _run(seed: int, hours: float = 6) -> MemoryTransport:
    devices = [record(k, f"dev-{k}-{i}") for k in KINDS for i in range(3)]
    transport = MemoryTransport(ManualClock(NOW_MS), devices)
    sim = Simulation(
        [COMMUNITY], devices, clock=SimulatedClock(NOW_MS, 0), seed=seed, transport=transport
    )
    sim.announce(online=True)
    report = sim.run(NOW_MS + int(hours * 3_600_000), threading.Event())
    assert report.total == len(transport.messages)
    return transport


def _stream(device: DeviceRecord, hours: float, seed: int = 7) -> list[tuple[str, Body]]:
    """(channel, payload) of one simulated device over ``hours``."""
    sim = KINDS[device.kind].simulate(device, COMMUNITY, random.Random(seed), NOW_MS)
    out: list[tuple[str, Body]] = []
    end = NOW_MS + int(hours * 3_600_000)
    while sim.next_due_ms() <= end:
        out += [(m.channel.value, m.payload) for m in sim.run_due(sim.next_due_ms())]
    return out


def _hour(ts: int) -> int:
    return datetime.fromtimestamp(ts / 1000, TZ).hour


def _events(stream: list[tuple[str, Body]], name: str) -> list[Body]:
    return [b for ch, b in stream if ch == "event" and b["event"] == name]


def _telemetry(kind: str, hours: float) -> list[Body]:
    return [json.loads(p) for ch, p in sample_payloads(kind, hours) if ch == "telemetry"]


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_same_stream_message_for_message() -> None:
    assert _run(seed=42).messages == _run(seed=42).messages


def test_other_seed_other_stream() -> None:
    assert _run(seed=1).messages != _run(seed=2).messages


def test_stream_is_in_event_time_order_per_device_with_consecutive_seq() -> None:
    last: dict[str, tuple[int, int]] = {}
    for message in _run(seed=3, hours=24).messages:
        if "/snapshot/" in message.topic:
            continue  # a JPEG: its detection carries the time and seq
        body = json.loads(message.payload)
        if "seq" not in body:
            continue
        device = message.topic.split("/")[3]
        prev_ts, prev_seq = last.get(device, (0, 0))
        assert body["seq"] == prev_seq + 1
        assert body["ts"] >= prev_ts
        last[device] = (body["ts"], body["seq"])


def test_heartbeats_follow_contract_intervals() -> None:
    for kind, interval_ms in (("door", 60_000), ("streetlight", 60_000)):
        ts = [t["ts"] for t in _telemetry(kind, 2)]
        gaps = {b - a for a, b in itertools.pairwise(ts)}
        assert gaps == {interval_ms}, kind


# --- doors ---------------------------------------------------------------------------------


def test_door_traffic_peaks_morning_and_evening_and_is_quiet_at_night() -> None:
    hours = Counter(_hour(b["ts"]) for b in _events(_stream(record("door"), DAY * 14), "unlock"))
    night = sum(hours[h] for h in (1, 2, 3, 4))
    assert hours[7] + hours[8] > 5 * night
    assert hours[17] + hours[18] > 5 * night
    assert hours[18] > 1.5 * hours[14]


def test_door_traffic_follows_the_households_behind_it() -> None:
    small = replace(record("door"), attributes={"unit_households": 8})
    large = replace(record("door"), attributes={"unit_households": 24})
    week = DAY * 7
    ratio = len(_events(_stream(large, week), "unlock")) / len(
        _events(_stream(small, week), "unlock")
    )
    assert 2.0 < ratio < 4.5  # three times the flats, about three times the passages
    per_household_day = len(_events(_stream(large, week), "unlock")) / 24 / 7
    assert 3 < per_household_day < 7  # people go out and come back


def test_unlock_methods_mix_and_failed_first_tries() -> None:
    stream = _stream(record("door"), DAY * 14)
    unlocks = _events(stream, "unlock")
    entries = Counter(b["method"] for b in unlocks if b["method"] != "button")
    assert [m for m, _ in entries.most_common()] == ["face", "card", "app", "pin"]
    assert entries["face"] > 0.6 * sum(entries.values())
    assert 0.35 < sum(b["method"] == "button" for b in unlocks) / len(unlocks) < 0.55
    failed = _events(stream, "unlock_failed")
    faces = [b for b in failed if b["method"] == "face"]
    assert 0.01 < len(faces) / entries["face"] < 0.06  # occasionally a face is not matched
    reasons = Counter(b["reason"] for b in failed)
    assert reasons.most_common(1)[0][0] == "unknown_face"
    assert set(reasons) <= {"unknown_face", "expired_card", "wrong_pin"}
    for miss in failed:  # the same person gets in a few seconds later
        after = [b for b in unlocks if 0 < b["ts"] - miss["ts"] <= 12_000]
        assert after, miss


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_open_closes_after_a_realistic_hold_and_nothing_is_held_open(seed: int) -> None:
    # A week of a busy door: passages overlap (a failed first try, someone right behind).
    busy = replace(record("door"), attributes={"unit_households": 24})
    stream = _stream(busy, DAY * 7, seed)
    leaf = [b for ch, b in stream if ch == "event" and b["event"] in ("open", "close")]
    kinds = [b["event"] for b in leaf]
    assert kinds == ["open", "close"] * (len(kinds) // 2)
    holds = [(c["ts"] - o["ts"]) / 1000 for o, c in zip(leaf[::2], leaf[1::2], strict=True)]
    assert 5 < statistics.median(holds) < 10 and max(holds) < 60
    assert not _events(stream, "held_open") and not _events(stream, "forced_open")


# --- street lamps -------------------------------------------------------------------------


def test_lamps_are_lit_exactly_between_sunset_and_sunrise() -> None:
    observer = Observer(latitude=COMMUNITY.lat, longitude=COMMUNITY.lon)
    readings = _telemetry("streetlight", 48)
    for body in readings:
        local = datetime.fromtimestamp(int(body["ts"]) / 1000, TZ)
        dark = local < sunrise(observer, local.date(), tzinfo=TZ) or local >= sunset(
            observer, local.date(), tzinfo=TZ
        )
        assert body["on"] == dark, body
    hours_lit = {_hour(b["ts"]) for b in readings if b["on"]}
    assert 12 not in hours_lit and 0 in hours_lit


def test_lamps_dim_after_midnight_and_draw_their_rated_power() -> None:
    rated = record("streetlight").attributes["rated_power_w"]
    for body in _telemetry("streetlight", 48):
        if not body["on"]:
            assert body["power_w"] < 1
            continue
        expected_dim = 50 if 0 <= _hour(body["ts"]) < 5 else 100
        assert body["dim_pct"] == expected_dim, body
        assert abs(body["power_w"] - rated * expected_dim / 100) < 0.06 * rated
        assert 198 <= body["voltage_v"] <= 242


def test_lux_follows_the_sky() -> None:
    readings = _telemetry("streetlight", 48)
    noon = [b["lux"] for b in readings if _hour(b["ts"]) in (11, 12, 13)]
    night = [b["lux"] for b in readings if _hour(b["ts"]) in (22, 23, 0, 1, 2, 3)]
    dusk = [b["lux"] for b in readings if _hour(b["ts"]) == 16]
    assert min(noon) > 5_000 and max(night) < 20
    assert max(night) < min(dusk) < max(dusk) < max(noon)


def test_the_energy_register_grows_by_what_the_lamp_drew() -> None:
    readings = _telemetry("streetlight", 48)
    energy = [b["energy_kwh"] for b in readings]
    assert energy == sorted(energy)
    drawn = sum(b["power_w"] for b in readings) / 60 / 1000  # one reading a minute
    assert abs((energy[-1] - energy[0]) - drawn) < 0.03 * drawn


# --- water meters ---------------------------------------------------------------------------


def test_registers_never_decrease() -> None:
    for kind, field in (("streetlight", "energy_kwh"), ("water_meter", "total_l")):
        values = [float(t[field]) for t in _telemetry(kind, 24 * 3)]
        assert values == sorted(values), kind
        assert values[-1] > values[0], kind


def test_water_flow_agrees_with_the_register() -> None:
    readings = _telemetry("water_meter", 24 * 2)
    for a, b in itertools.pairwise(readings):
        used = float(b["total_l"]) - float(a["total_l"])
        if float(a["flow_lpm"]) == 0:
            assert used < 0.2, (a, b)  # nothing flowed between (rounding only)
        else:
            minutes = (int(b["ts"]) - int(a["ts"])) / 60_000
            assert abs(used - float(a["flow_lpm"]) * minutes) < 0.2


def test_water_is_used_at_meals_little_at_night_and_differently_per_household() -> None:
    daily, by_hour = [], Counter[int]()
    for i in range(12):
        meter = replace(record("water_meter"), device_id=f"wm-{i}")
        readings = [b for ch, b in _stream(meter, DAY * 7, seed=i) if ch == "telemetry"]
        daily.append((readings[-1]["total_l"] - readings[0]["total_l"]) / 7)
        for a, b in itertools.pairwise(readings):
            if a["flow_lpm"] > 0:
                by_hour[_hour(a["ts"])] += b["total_l"] - a["total_l"]
    assert all(30 < litres < 250 for litres in daily), daily
    assert max(daily) > 1.5 * min(daily)  # households differ
    meals = by_hour[7] + by_hour[11] + by_hour[18]
    night = by_hour[1] + by_hour[2] + by_hour[3]
    assert meals > 4 * night > 0  # a trip to the toilet at night, but not much


def test_meter_battery_drains_slowly() -> None:
    battery = [b["battery_pct"] for b in _telemetry("water_meter", DAY * 30)]
    assert battery == sorted(battery, reverse=True)
    assert 1 <= battery[0] - battery[-1] <= 4  # about one percent in twelve days


# --- the patrol robot -----------------------------------------------------------------------


def test_robot_patrols_at_night_through_its_checkpoints_in_order_and_charges_by_day() -> None:
    robot = record("patrol_robot")
    stream = _stream(robot, DAY * 3)
    route = [c["id"] for c in robot.attributes["routes"][0]["checkpoints"]]
    passed = [b["checkpoint_id"] for b in _events(stream, "checkpoint")]
    assert passed[: len(route) * 3] == route * 3  # lap after lap, in order
    readings = [b for ch, b in stream if ch == "telemetry"]
    for body in readings:
        if body["mode"] == "patrolling":
            assert _hour(body["ts"]) >= 22 or _hour(body["ts"]) < 6, body
    assert min(b["battery_pct"] for b in readings) >= 25  # home with plenty to spare
    mornings = [b for b in readings if _hour(b["ts"]) == 9]
    assert mornings and all(b["mode"] == "idle" and b["battery_pct"] == 100 for b in mornings)
    for a, b in itertools.pairwise(readings):  # at walking speed
        if a["mode"] == b["mode"] == "patrolling":
            step = distance_m(a["lat"], a["lon"], b["lat"], b["lon"])
            assert step <= SPEED_MPS * (b["ts"] - a["ts"]) / 1000 + 0.5


def test_robot_detects_the_seven_scenes_at_a_plausible_rate() -> None:
    detections = _events(_stream(record("patrol_robot"), DAY * 30), "detection")
    per_night = len(detections) / 30
    assert 2 < per_night < 8, per_night  # a handful a night
    scenes = Counter(d["scene"] for d in detections)
    assert scenes.most_common(1)[0][0] == "garbage_overflow"
    assert set(scenes) <= {
        "loitering",
        "fire_lane_blocked",
        "ebike_indoor_charging",
        "garbage_overflow",
        "smoke_fire",
        "waterlogging",
        "facility_damage",
    }


def test_a_robot_started_at_night_is_already_out() -> None:
    one_am = int(datetime(2026, 11, 20, 1, 0, tzinfo=TZ).timestamp() * 1000)
    robot = KINDS["patrol_robot"].simulate(
        record("patrol_robot"), COMMUNITY, random.Random(1), one_am
    )
    first = robot.drain()[0].payload
    assert first["mode"] == "patrolling" and 60 < first["battery_pct"] < 90


# --- commands --------------------------------------------------------------------------------


def _command(name: str, args: dict[str, object], ts: int, expires: int) -> Command:
    return msgspec.convert(
        {"cmd_id": "c-1", "ts": ts, "name": name, "args": args, "expires_ts": expires}, Command
    )


def test_commands_are_acknowledged_and_change_what_the_device_reports() -> None:
    lamp = KINDS["streetlight"].simulate(record("streetlight"), COMMUNITY, random.Random(1), NOW_MS)
    now = NOW_MS + 1000
    out = lamp.handle_command(
        _command("set_light", {"on": True, "dim_pct": 60}, now, now + 60_000), now
    )
    channels = [o.channel for o in out]
    assert channels[-1] is Channel.CMD_ACK and out[-1].payload["ok"] is True
    assert lamp.telemetry(now + 1)["dim_pct"] == 60


def test_expired_commands_are_ignored() -> None:
    door = KINDS["door"].simulate(record("door"), COMMUNITY, random.Random(1), NOW_MS)
    assert door.handle_command(_command("unlock", {}, NOW_MS, NOW_MS + 10), NOW_MS + 11) == []


def test_unknown_command_is_refused_in_the_ack() -> None:
    meter = KINDS["water_meter"].simulate(
        record("water_meter"), COMMUNITY, random.Random(1), NOW_MS
    )
    out = meter.handle_command(_command("explode", {}, NOW_MS, NOW_MS + 10_000), NOW_MS)
    assert out[-1].payload["ok"] is False and "explode" in out[-1].payload["error"]


def test_command_arguments_are_checked_against_the_kind_schema() -> None:
    lamp = KINDS["streetlight"].simulate(record("streetlight"), COMMUNITY, random.Random(1), NOW_MS)
    out = lamp.handle_command(_command("set_light", {}, NOW_MS, NOW_MS + 10_000), NOW_MS)
    assert out[-1].payload["ok"] is False and "bad arguments" in out[-1].payload["error"]
    meter = KINDS["water_meter"].simulate(
        record("water_meter"), COMMUNITY, random.Random(1), NOW_MS
    )
    out = meter.handle_command(
        _command("set_valve", {"valve": "foo"}, NOW_MS, NOW_MS + 10_000), NOW_MS
    )
    assert out[-1].payload["ok"] is False
    assert meter.telemetry(NOW_MS)["valve"] == "open"


def test_dimming_window_may_span_midnight() -> None:
    lamp = KINDS["streetlight"].simulate(record("streetlight"), COMMUNITY, random.Random(1), NOW_MS)
    args = {"dim_from": "23:00", "dim_until": "05:00", "dim_pct": 30}
    out = lamp.handle_command(_command("set_schedule", args, NOW_MS, NOW_MS + 10_000), NOW_MS)
    assert out[-1].payload["ok"] is True
    day = datetime.fromtimestamp(NOW_MS / 1000, TZ).replace(hour=23, minute=30)
    late_evening = int(day.timestamp() * 1000)
    assert lamp._scheduled_state(late_evening) == (True, 30)  # type: ignore[attr-defined]


# --- time ------------------------------------------------------------------------------------


def test_going_live_after_a_slow_replay_never_stamps_the_future() -> None:
    """A replay slower than its speed leaves the clock ahead of the wall; live must not be."""
    devices = [record("door", f"dev-door-{i}") for i in range(20)]
    wall_now = int(time.time() * 1000)
    clock = SimulatedClock(wall_now - 3_600_000, speed=1_000_000)
    transport = MemoryTransport(clock, devices)
    sim = Simulation([COMMUNITY], devices, clock=clock, seed=1, transport=transport)
    sim.run(wall_now - 120_000, threading.Event())  # going live then catches up two minutes
    assert clock.now_ms() > int(time.time() * 1000) + 60_000  # ran ahead, as in make run
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    before = len(transport.messages)
    sim.follow_live(stop)
    live = [json.loads(m.payload) for m in transport.messages[before:]]
    assert live, "nothing published live"
    assert max(m["ts"] for m in live) <= int(time.time() * 1000)


def test_progress_lines_and_the_summary_per_kind() -> None:
    plan = Plan("mqtt://x", "sqlite://", ("zjxc",), NOW_MS, NOW_MS + 3_600_000, 0, True, 1, 1)
    progress = Progress(plan, workers=2)
    first = Report(started_ms=NOW_MS, reached_ms=NOW_MS + 1_800_000)
    first.counts.update({("door", "telemetry"): 600, ("door", "event"): 40})
    first.devices.update({"door": 10})
    progress.update(0, first)
    assert "+00:00 (0% of the replay)" in progress.line()  # the other worker is not heard yet
    second = Report(started_ms=NOW_MS, reached_ms=NOW_MS + 2_700_000)
    second.counts.update({("streetlight", "telemetry"): 900})
    second.devices.update({"streetlight": 20})
    progress.update(1, second)
    line = progress.line()
    assert "(50% of the replay): 1,540 messages" in line and "msg/s" in line
    table = summary(progress.total).splitlines()
    assert table[0].split() == [
        "kind",
        "devices",
        "telemetry",
        "event",
        "status",
        "cmd_ack",
        "snapshot",
        "total",
    ]
    assert table[1].split() == ["door", "10", "600", "40", "0", "0", "0", "640"]
    assert table[-1].split() == ["all", "30", "1,540"]


# --- snapshots -------------------------------------------------------------------------------


def _robot_messages(seed: int, nights: int) -> list[Message]:
    robot = record("patrol_robot")
    transport = MemoryTransport(ManualClock(NOW_MS), [robot])
    sim = Simulation(
        [COMMUNITY], [robot], clock=SimulatedClock(NOW_MS, 0), seed=seed, transport=transport
    )
    report = sim.run(NOW_MS + nights * DAY * 3_600_000, threading.Event())
    assert report.counts[("patrol_robot", "snapshot")] > 0
    return transport.messages


def test_every_detection_is_followed_by_its_frame_on_its_snapshot_topic() -> None:
    messages = _robot_messages(seed=3, nights=10)
    base = "sc/zjxc/patrol_robot/zjxc-patrol_robot-1"
    processor = Processor(ImageryLimits(), DetectorSettings())
    flags: Counter[str] = Counter()
    plates: list[str] = []
    detections = 0
    for i, message in enumerate(messages):
        if message.topic != f"{base}/event" or b'"detection"' not in message.payload:
            continue
        detections += 1
        snapshot_id = json.loads(message.payload)["snapshot_id"]
        assert re.fullmatch(r"s-\d{8}-\d{4}-\d{4,}", snapshot_id), snapshot_id
        frame = messages[i + 1]  # sent right after its detection, as the contract asks
        assert frame.topic == f"{base}/snapshot/{snapshot_id}" and not frame.retain
        processed = processor.process(frame.payload, QualityThresholds())
        assert (processed.declared.width, processed.declared.height) == (640, 480)
        flags.update(processed.quality.flags or ["good"])
        plates += processed.qr_texts
    assert 20 < detections < 80, detections
    assert sum("/snapshot/" in m.topic for m in messages) == detections  # and no other frame
    # Mostly good frames, sometimes dark or blurred (about 8 % and 7 %).
    assert flags["good"] > 0.7 * detections and flags["dark"] + flags["blurred"] > 0, flags
    # At a checkpoint the robot's camera sees its plate.
    assert plates and all(re.fullmatch(r"gridwatch:cp:zjxc:night-a:cp-0[1-5]", p) for p in plates)
    # The same seed sends the same bytes; another seed other frames.
    assert _robot_messages(seed=3, nights=10) == messages
    assert _robot_messages(seed=4, nights=10) != messages


def test_a_scripted_camera_fault_spoils_every_frame_until_it_ends() -> None:
    robot = KINDS["patrol_robot"].simulate(
        record("patrol_robot"), COMMUNITY, random.Random(1), NOW_MS
    )
    assert isinstance(robot, SimulatedPatrolRobot)
    processor = Processor(ImageryLimits(), DetectorSettings())

    def frame_flags(ts: int) -> list[str]:
        robot.detect(ts, "loitering", 0.5)
        out = robot.drain()
        assert [m.channel for m in out] == [Channel.EVENT, Channel.SNAPSHOT]
        assert out[1].image is not None
        return processor.process(out[1].image, QualityThresholds()).quality.flags

    robot.camera_fault(NOW_MS, "obstructed")
    assert [frame_flags(NOW_MS + i * 60_000) for i in range(3)] == [["obstructed"]] * 3
    robot.camera_fault(NOW_MS, None)
    assert frame_flags(NOW_MS + 600_000) == []
