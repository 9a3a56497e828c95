"""Simulated devices: deterministic, plausible, and obedient to commands (no broker needed)."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec
from astral import Observer
from astral.sun import sunrise, sunset

from devices import KINDS
from devices.contract import Channel, Command
from gridwatch.clock import SimulatedClock
from simulators.engine import Simulation
from tests.contract_helpers import COMMUNITY, NOW_MS, record, sample_payloads

TZ = ZoneInfo("Asia/Shanghai")


class RecordingTransport:
    """Keeps every published message in order."""

    unconfirmed = 0

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []

    def publish(self, device_id: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.messages.append((topic, payload, retain))

    def poll(self, timeout: float) -> None:
        return None


def _run(seed: int, hours: float = 6) -> RecordingTransport:
    transport = RecordingTransport()
    devices = [record(k, f"dev-{k}-{i}") for k in KINDS for i in range(3)]
    sim = Simulation(
        [COMMUNITY], devices, clock=SimulatedClock(NOW_MS, 0), seed=seed, transport=transport
    )
    sim.announce(online=True)
    report = sim.run(NOW_MS + int(hours * 3_600_000), threading.Event())
    assert report.total == len(transport.messages)
    return transport


def test_same_seed_same_stream_message_for_message() -> None:
    assert _run(seed=42).messages == _run(seed=42).messages


def test_other_seed_other_stream() -> None:
    assert _run(seed=1).messages != _run(seed=2).messages


def test_stream_is_in_event_time_order_per_device_with_consecutive_seq() -> None:
    last: dict[str, tuple[int, int]] = {}
    for topic, payload, _ in _run(seed=3, hours=24).messages:
        body = json.loads(payload)
        if "seq" not in body:
            continue
        device = topic.split("/")[3]
        prev_ts, prev_seq = last.get(device, (0, 0))
        assert body["seq"] == prev_seq + 1
        assert body["ts"] >= prev_ts
        last[device] = (body["ts"], body["seq"])


def _telemetry(kind: str, hours: float) -> list[dict[str, object]]:
    return [json.loads(p) for ch, p in sample_payloads(kind, hours) if ch == "telemetry"]


def test_heartbeats_follow_contract_intervals() -> None:
    for kind, interval_ms in (("door", 60_000), ("streetlight", 60_000)):
        ts = [t["ts"] for t in _telemetry(kind, 2)]
        gaps = {b - a for a, b in itertools.pairwise(ts)}  # type: ignore[operator]
        assert gaps == {interval_ms}, kind


def test_door_traffic_peaks_morning_and_evening_and_is_quiet_at_night() -> None:
    hours: Counter[int] = Counter()
    for ch, payload in sample_payloads("door", hours=24 * 14):
        body = json.loads(payload)
        if ch == "event" and body["event"] == "unlock":
            hours[datetime.fromtimestamp(body["ts"] / 1000, TZ).hour] += 1
    night = sum(hours[h] for h in (1, 2, 3, 4))
    assert hours[7] + hours[8] > 5 * night
    assert hours[18] > 3 * hours[14] / 2
    methods = Counter(
        json.loads(p)["method"]
        for ch, p in sample_payloads("door", 24 * 3)
        if ch == "event" and b'"unlock"' in p
    )
    assert methods.most_common(2)[0][0] in {"face", "button"}


def test_lamps_are_lit_exactly_between_sunset_and_sunrise() -> None:
    observer = Observer(latitude=COMMUNITY.lat, longitude=COMMUNITY.lon)
    readings = _telemetry("streetlight", 48)
    for body in readings:
        local = datetime.fromtimestamp(int(body["ts"]) / 1000, TZ)  # type: ignore[call-overload]
        dark = local < sunrise(observer, local.date(), tzinfo=TZ) or local >= sunset(
            observer, local.date(), tzinfo=TZ
        )
        assert body["on"] == dark, body
    hours_lit = {datetime.fromtimestamp(int(b["ts"]) / 1000, TZ).hour for b in readings if b["on"]}  # type: ignore[call-overload]
    assert 12 not in hours_lit and 0 in hours_lit


def test_registers_never_decrease() -> None:
    for kind, field in (("streetlight", "energy_kwh"), ("water_meter", "total_l")):
        values = [float(t[field]) for t in _telemetry(kind, 24 * 3)]  # type: ignore[arg-type]
        assert values == sorted(values), kind
        assert values[-1] > values[0], kind


def test_water_flow_agrees_with_the_register() -> None:
    readings = _telemetry("water_meter", 24 * 2)
    for a, b in itertools.pairwise(readings):
        used = float(b["total_l"]) - float(a["total_l"])  # type: ignore[arg-type]
        if float(a["flow_lpm"]) == 0:  # type: ignore[arg-type]
            assert used < 0.2, (a, b)  # nothing flowed between (rounding only)
        else:
            minutes = (int(b["ts"]) - int(a["ts"])) / 60_000  # type: ignore[call-overload]
            assert abs(used - float(a["flow_lpm"]) * minutes) < 0.2  # type: ignore[arg-type]


def test_robot_visits_checkpoints_in_order_at_night_and_charges_by_day() -> None:
    payloads = [json.loads(p) for ch, p in sample_payloads("patrol_robot", 24)]
    checkpoints = [p["checkpoint_id"] for p in payloads if p.get("event") == "checkpoint"]
    assert checkpoints[:5] == ["cp-01", "cp-02", "cp-03", "cp-04", "cp-05"]
    assert checkpoints[5:10] == checkpoints[:5]
    for p in payloads:
        if "mode" in p and p["mode"] == "patrolling":
            hour = datetime.fromtimestamp(p["ts"] / 1000, TZ).hour
            assert hour >= 22 or hour < 6, p


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


def test_going_live_after_a_slow_replay_never_stamps_the_future() -> None:
    """A replay slower than its speed leaves the clock ahead of the wall; live must not be."""
    transport = RecordingTransport()
    devices = [record("door", f"dev-door-{i}") for i in range(20)]
    wall_now = int(time.time() * 1000)
    clock = SimulatedClock(wall_now - 3_600_000, speed=1_000_000)
    sim = Simulation([COMMUNITY], devices, clock=clock, seed=1, transport=transport)
    sim.run(wall_now - 120_000, threading.Event())  # going live then catches up two minutes
    assert clock.now_ms() > int(time.time() * 1000) + 60_000  # ran ahead, as in make run
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    before = len(transport.messages)
    sim.follow_live(stop)
    live = [json.loads(p) for _, p, _ in transport.messages[before:]]
    assert live, "nothing published live"
    assert max(m["ts"] for m in live) <= int(time.time() * 1000)
