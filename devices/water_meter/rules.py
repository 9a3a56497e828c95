"""The water meter's alert rules (PRODUCT.md): no use, continuous flow, tamper.

The welfare thresholds come, in this order, from the household's care profile
(``care: {no_use_hours, continuous_flow_hours}`` in the registry), the
community's settings, and the defaults here. A household with
``care: {watched: false}`` gets no welfare check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from alerts.rule import Ctx, Observation, P, Params, Rule, S, Severity
from alerts.site import Site
from devices.contract import Channel, DeviceRecord

METER = frozenset({"water_meter"})
# The register moves in steps of 0.1 L; less than this is rounding, not use.
REGISTER_STEP_L = 0.05
HOUR_MS = 3_600_000


class CareRule(Rule[P, S]):
    """A welfare rule whose ``hours`` the household's care profile may set."""

    care_key: str

    def params_for(self, site: Site, device: DeviceRecord | None) -> P:
        """Defaults < community settings < the household's care profile."""
        care = (device.attributes.get("care") or {}) if device else {}
        overrides = dict(site.overrides(self.id))
        if care.get(self.care_key) is not None:
            overrides["hours"] = care[self.care_key]
        if care.get("watched") is False:
            overrides["enabled"] = False
        return msgspec.convert(overrides, self.params_type)


class NoUseParams(Params, frozen=True):
    """No water drawn for ``hours``."""

    hours: float = 12


class NoUseState(msgspec.Struct, frozen=True):
    """The register, when water was last drawn (0: never seen), whether that raised."""

    total: float = 0.0
    since: int = 0
    active: bool = False


class NoUse(CareRule[NoUseParams, NoUseState]):
    """The register has not moved for hours: go to the door (welfare check)."""

    id = "water.no_use"
    kinds = METER
    care_key = "no_use_hours"
    title_zh = "重点管护老人家中长时间未用水"
    action_zh = "请尽快上门或电话探望，确认老人安全；联系不上请联系其紧急联系人。"
    params_type = NoUseParams
    state_type = NoUseState

    def observe(self, ctx: Ctx[NoUseParams, NoUseState], obs: Observation) -> None:
        """Any draw (flow, or the register moving) restarts the window."""
        state = ctx.state
        total = float(obs.values["total_l"])
        used = float(obs.values["flow_lpm"]) > 0 or total > state.total + REGISTER_STEP_L
        if state.since and not used:
            return
        if state.since and obs.ts < state.since:
            return  # a late reading says nothing new
        if state.active:
            ctx.clear()
        ctx.state = NoUseState(total, obs.ts)
        ctx.set_timer(obs.ts + int(ctx.params.hours * HOUR_MS))

    def on_timer(self, ctx: Ctx[NoUseParams, NoUseState]) -> None:
        """Nothing drawn for the whole window."""
        state = ctx.state
        if not state.active:
            ctx.raise_alert(Severity.CRITICAL, since_ms=state.since, facts=_hours(ctx.params))
            ctx.state = NoUseState(state.total, state.since, active=True)

    def title(self, facts: Mapping[str, Any]) -> str:
        """重点管护老人家中 N 小时未用水."""
        return f"重点管护老人家中{facts.get('hours', '')}小时未用水"


class ContinuousFlowParams(Params, frozen=True):
    """Water flowing without a pause for ``hours``."""

    hours: float = 2


class FlowState(msgspec.Struct, frozen=True):
    """Since when water flows (0: it does not), and whether that raised."""

    since: int = 0
    active: bool = False


class ContinuousFlow(CareRule[ContinuousFlowParams, FlowState]):
    """A tap left on, a leak, or someone who fell while the water ran."""

    id = "water.continuous_flow"
    kinds = METER
    care_key = "continuous_flow_hours"
    title_zh = "持续用水不停"
    action_zh = "可能是水龙头未关、漏水或老人跌倒：请立即电话联系老人，联系不上请上门查看。"
    params_type = ContinuousFlowParams
    state_type = FlowState

    def observe(self, ctx: Ctx[ContinuousFlowParams, FlowState], obs: Observation) -> None:
        """The meter reports every start and stop of flow, so flow > 0 in a row is no pause."""
        state = ctx.state
        flowing = float(obs.values["flow_lpm"]) > 0
        if flowing and not state.since:
            ctx.state = FlowState(obs.ts)
            ctx.set_timer(obs.ts + int(ctx.params.hours * HOUR_MS))
        elif not flowing and state.since and obs.ts >= state.since:
            ctx.cancel_timer()
            if state.active:
                ctx.clear()
            ctx.state = FlowState()

    def on_timer(self, ctx: Ctx[ContinuousFlowParams, FlowState]) -> None:
        """Still flowing."""
        state = ctx.state
        if state.since and not state.active:
            ctx.raise_alert(Severity.MAJOR, since_ms=state.since, facts=_hours(ctx.params))
            ctx.state = FlowState(state.since, active=True)

    def title(self, facts: Mapping[str, Any]) -> str:
        """持续用水超过 N 小时."""
        return f"持续用水超过{facts.get('hours', '')}小时"


class TamperState(msgspec.Struct, frozen=True):
    """Whether water is flowing backwards (which raised)."""

    reverse: bool = False


class Tamper(Rule[Params, TamperState]):
    """A ``tamper`` event (a person resolves it) or reverse flow (clears when it stops)."""

    id = "water.tamper"
    kinds = METER
    channels = frozenset({Channel.TELEMETRY, Channel.EVENT})
    events = frozenset({"tamper"})
    title_zh = "水表被拆动"
    action_zh = "请上门检查水表和管路，确认有无私接、倒装或破坏。"
    params_type = Params
    state_type = TamperState

    def observe(self, ctx: Ctx[Params, TamperState], obs: Observation) -> None:
        """Raise on the event; follow ``reverse_flow`` in readings."""
        if obs.channel is Channel.EVENT:
            ctx.raise_alert(Severity.MINOR, latch=True, facts={"cause": "tamper"})
            return
        reverse = bool(obs.values.get("reverse_flow", False))
        if reverse == ctx.state.reverse:
            return
        if reverse:
            ctx.raise_alert(Severity.MINOR, facts={"cause": "reverse"})
        else:
            ctx.clear()
        ctx.state = TamperState(reverse)

    def title(self, facts: Mapping[str, Any]) -> str:
        """水表被拆动 or 水表倒流."""
        return "水表倒流" if facts.get("cause") == "reverse" else self.title_zh


def _hours(params: NoUseParams | ContinuousFlowParams) -> dict[str, Any]:
    hours = params.hours
    return {"hours": int(hours) if float(hours).is_integer() else hours}


RULES = (NoUse(), ContinuousFlow(), Tamper())
