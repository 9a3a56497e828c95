"""The street lamp's alert rules (PRODUCT.md): failure, circuit down, day burning, voltage.

"Should be lit" is the operator's last switch command while it holds (a
``switched`` event with ``by: command``, until the schedule takes over again),
otherwise darkness: the community's sunset to sunrise, from its coordinates in
its own time zone, with a margin so that a lamp switched by its light sensor a
few minutes off the astronomical time is not a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from alerts.rule import Ctx, Finding, Observation, Params, Rule, Severity, grouped
from devices.contract import Channel

LAMP = frozenset({"streetlight"})
# Faults that leave the lamp dark or dangerous; over/undervoltage is light.voltage's.
LAMP_FAULTS = frozenset({"lamp_failure", "driver_fault", "leakage"})
FAULTS_ZH = {
    "lamp_failure": "灯具损坏",
    "driver_fault": "驱动电源故障",
    "leakage": "漏电",
    "overvoltage": "过压",
    "undervoltage": "欠压",
}


def commanded_after(obs: Observation, current: bool | None) -> bool | None:
    """The switch command in force after ``obs``: a command sets it, the schedule ends it."""
    if obs.event != "switched":
        return current
    return bool(obs.values["on"]) if obs.values.get("by") == "command" else None


def _rated_w(ctx: Ctx[Any, Any]) -> float:
    return float(ctx.require_device().attributes["rated_power_w"])


class FailureParams(Params, frozen=True):
    """Dark lamp: draws under ``min_power_pct`` of its rating while it should be lit."""

    min_power_pct: float = 10
    dark_margin_min: int = 10


class LampState(msgspec.Struct, frozen=True):
    """The command in force, and why the lamp is held failed ("" = it is not)."""

    commanded: bool | None = None
    cause: str = ""


class Failure(Rule[FailureParams, LampState]):
    """Should be lit but draws (almost) nothing, or reports a lamp fault."""

    id = "light.failure"
    kinds = LAMP
    channels = frozenset({Channel.TELEMETRY, Channel.EVENT})
    events = frozenset({"switched", "fault", "fault_cleared"})
    title_zh = "路灯不亮"
    action_zh = "请安排电工检修灯具和驱动电源。"
    params_type = FailureParams
    state_type = LampState

    def observe(self, ctx: Ctx[FailureParams, LampState], obs: Observation) -> None:
        """Events set the command or a fault; readings are checked against "should be lit"."""
        state = ctx.state
        if obs.event == "switched":
            commanded = commanded_after(obs, state.commanded)
            if commanded != state.commanded:
                ctx.state = LampState(commanded, state.cause)
            return
        fault = obs.values.get("fault")
        if obs.event == "fault_cleared":
            if state.cause == f"fault:{fault}":
                self._settle(ctx, "")
            return
        if obs.event == "fault":
            if fault in LAMP_FAULTS:
                self._settle(ctx, f"fault:{fault}", fault=fault)
            return
        self._reading(ctx, obs, fault)

    def _reading(self, ctx: Ctx[FailureParams, LampState], obs: Observation, fault: object) -> None:
        state, params = ctx.state, ctx.params
        if state.commanded is not None:
            expected = state.commanded
        else:
            expected = ctx.site.sun.is_dark(obs.ts, params.dark_margin_min * 60_000)
        rated = _rated_w(ctx)
        power = float(obs.values["power_w"])
        dark = expected and power < rated * params.min_power_pct / 100
        if fault in LAMP_FAULTS:
            self._settle(ctx, f"fault:{fault}", fault=fault, power=power, rated=rated)
        elif dark:
            self._settle(ctx, "dark", power=power, rated=rated)
        elif expected or (state.cause.startswith("fault:") and fault is None):
            # Positive evidence only: a lamp that failed at night is not mended by sunrise.
            self._settle(ctx, "")

    def _settle(self, ctx: Ctx[FailureParams, LampState], cause: str, **facts: Any) -> None:
        state = ctx.state
        if bool(cause) == bool(state.cause):
            return
        if cause:
            facts["cause"] = cause.split(":")[0]
            if "fault" in facts:
                facts["fault_zh"] = FAULTS_ZH.get(str(facts["fault"]), str(facts["fault"]))
            ctx.raise_alert(Severity.MAJOR, facts=facts)
        else:
            ctx.clear()
        ctx.state = LampState(state.commanded, cause)

    def title(self, facts: Mapping[str, Any]) -> str:
        """路灯不亮 (with its draw) or 路灯故障：<fault>."""
        if facts.get("cause") == "fault":
            return f"路灯故障：{facts.get('fault_zh', '')}"
        if "power" in facts:
            return f"{self.title_zh}（功率{facts['power']:.0f}W，额定{facts['rated']:.0f}W）"
        return self.title_zh

    def action(self, facts: Mapping[str, Any]) -> str:
        """Leakage is a danger to passers-by first."""
        if facts.get("fault") == "leakage":
            return "有漏电危险：请尽快断电检修，并在灯杆周围设置警示。"
        return self.action_zh


class CircuitParams(Params, frozen=True):
    """``lamps`` lamps of one circuit failing within ``window_min`` minutes."""

    lamps: int = 3
    window_min: int = 10


class CircuitState(msgspec.Struct, frozen=True):
    """Failing lamps ("rule|lamp" → since when) and whether the circuit alert is open."""

    failing: dict[str, int] = msgspec.field(default_factory=dict)
    active: bool = False


class CircuitDown(Rule[CircuitParams, CircuitState]):
    """Lamps failing together on one circuit: one alert for the circuit, lamps filed under it.

    It listens to ``light.failure`` and to ``device.offline`` of lamps (a tripped
    breaker cuts the lamps' controllers too, so they fall silent rather than dark).
    """

    id = "light.circuit_down"
    kinds = LAMP
    channels = frozenset[Channel]()
    listens_to = frozenset({"light.failure", "device.offline"})
    keyed_by_device = False
    subject_kind = "streetlight"
    title_zh = "回路停电"
    action_zh = "请检查该回路的配电箱、空气开关和电缆。"
    params_type = CircuitParams
    state_type = CircuitState

    def finding_key(self, finding: Finding) -> str | None:
        """Lamp findings, keyed by community and circuit."""
        if finding.kind != "streetlight" or finding.device is None:
            return None
        return f"{finding.community}:{finding.device.attributes['circuit']}"

    def on_finding(self, ctx: Ctx[CircuitParams, CircuitState], finding: Finding) -> str:
        """Count the circuit's failing lamps; file every lamp finding under the circuit."""
        circuit = str(ctx.require_device().attributes["circuit"])
        state, params = ctx.state, ctx.params
        failing = dict(state.failing)
        entry = f"{finding.rule}|{finding.subject}"
        if finding.raised:
            failing.setdefault(entry, finding.ts)
        else:
            failing.pop(entry, None)
        lamps = {name.split("|", 1)[1] for name in failing}
        start = finding.ts - params.window_min * 60_000
        recent = {name.split("|", 1)[1]: ts for name, ts in failing.items() if ts >= start}
        active = state.active
        if not active and len(recent) >= params.lamps:
            active = True
            facts = {"circuit": circuit, "lamps": len(lamps), "window_min": params.window_min}
            ctx.raise_alert(
                Severity.CRITICAL,
                subject=circuit,
                since_ms=min(recent.values()),
                facts=facts,
                place=f"{circuit}回路",
                device_id="",
            )
        elif active and len(lamps) < params.lamps:
            active = False
            ctx.clear(subject=circuit)
        ctx.state = CircuitState(failing, active)
        return grouped(self.id, circuit)

    def title(self, facts: Mapping[str, Any]) -> str:
        """X回路停电：N 盏路灯同时故障."""
        return f"{facts.get('circuit', '')}回路停电：{facts.get('lamps', '?')}盏路灯同时故障"


class DayBurningParams(Params, frozen=True):
    """Lit more than ``after_sunrise_min`` after sunrise (and before sunset)."""

    after_sunrise_min: int = 30
    min_power_pct: float = 10


class DayBurningState(msgspec.Struct, frozen=True):
    """The command in force, and whether the lamp is held burning by day."""

    commanded: bool | None = None
    active: bool = False


class DayBurning(Rule[DayBurningParams, DayBurningState]):
    """A lamp burning in daylight wastes energy and usually means a broken controller."""

    id = "light.day_burning"
    kinds = LAMP
    channels = frozenset({Channel.TELEMETRY, Channel.EVENT})
    events = frozenset({"switched"})
    title_zh = "路灯白天常亮"
    action_zh = "请远程关灯，并检查路灯控制器的光控和定时设置。"
    params_type = DayBurningParams
    state_type = DayBurningState

    def observe(self, ctx: Ctx[DayBurningParams, DayBurningState], obs: Observation) -> None:
        """Lit by day without an operator's command raises; dark or dusk clears."""
        state, params = ctx.state, ctx.params
        if obs.channel is Channel.EVENT:
            commanded = commanded_after(obs, state.commanded)
            if commanded != state.commanded:
                ctx.state = DayBurningState(commanded, state.active)
            return
        day = ctx.site.sun.day(obs.ts)
        daytime = day.sunrise_ms + params.after_sunrise_min * 60_000 <= obs.ts < day.sunset_ms
        power = float(obs.values["power_w"])
        lit = bool(obs.values["on"]) or power >= _rated_w(ctx) * params.min_power_pct / 100
        burning = daytime and lit and state.commanded is not True
        if burning and not state.active:
            ctx.raise_alert(Severity.MINOR, facts={"power": power})
        elif state.active and not burning:
            ctx.clear()
        if burning != state.active:
            ctx.state = DayBurningState(state.commanded, burning)


class VoltageParams(Params, frozen=True):
    """Supply voltage outside ``low_v``–``high_v`` for ``readings`` readings in a row."""

    low_v: float = 198
    high_v: float = 242
    readings: int = 3


class VoltageState(msgspec.Struct, frozen=True):
    """Consecutive readings outside / inside the band, and whether that raised."""

    outside: int = 0
    inside: int = 0
    active: bool = False


class Voltage(Rule[VoltageParams, VoltageState]):
    """Over- or undervoltage that lasts: it shortens the lamps' lives (GB/T 12325: 220 V ±10 %)."""

    id = "light.voltage"
    kinds = LAMP
    title_zh = "路灯电压异常"
    action_zh = "请检查该回路的供电电压和线路接头。"
    params_type = VoltageParams
    state_type = VoltageState

    def observe(self, ctx: Ctx[VoltageParams, VoltageState], obs: Observation) -> None:
        """Raise after ``readings`` bad readings in a row, clear after as many good ones."""
        state, params = ctx.state, ctx.params
        volts = float(obs.values["voltage_v"])
        if not params.low_v <= volts <= params.high_v:
            new = VoltageState(min(state.outside + 1, params.readings), 0, state.active)
            if new.outside >= params.readings and not state.active:
                facts = {"voltage": volts, "low": params.low_v, "high": params.high_v}
                ctx.raise_alert(Severity.MINOR, facts=facts)
                new = VoltageState(new.outside, 0, True)
        else:
            # Good readings only count while raised, so a healthy lamp keeps no state.
            inside = min(state.inside + 1, params.readings) if state.active else 0
            new = VoltageState(0, inside, state.active)
            if state.active and new.inside >= params.readings:
                ctx.clear()
                new = VoltageState()
        if new != state:
            ctx.state = new

    def title(self, facts: Mapping[str, Any]) -> str:
        """路灯电压异常（N V）."""
        volts = facts.get("voltage")
        return (
            f"{self.title_zh}（{volts:.0f}V）" if isinstance(volts, int | float) else self.title_zh
        )


RULES = (Failure(), CircuitDown(), DayBurning(), Voltage())
