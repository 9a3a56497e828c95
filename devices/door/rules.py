"""The door's alert rules (PRODUCT.md): forced open, tamper, held open, brute force."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from alerts.rule import Ctx, EventRule, Observation, Params, Rule, Severity
from alerts.site import in_daily_window
from devices.contract import Channel

DOOR = frozenset({"door"})


class Forced(EventRule):
    """``forced_open``: the door opened without an unlock."""

    id = "door.forced"
    kinds = DOOR
    events = frozenset({"forced_open"})
    severity = Severity.CRITICAL
    title_zh = "单元门被强行打开"
    action_zh = "请立即到现场查看，确认有无人员强行闯入；必要时报警（110）。"


class Tamper(EventRule):
    """``tamper``: the reader or its enclosure was tampered with."""

    id = "door.tamper"
    kinds = DOOR
    events = frozenset({"tamper"})
    severity = Severity.CRITICAL
    title_zh = "门禁设备被撬动或破坏"
    action_zh = "请到现场检查门禁读头和机箱，保护现场并报修。"


class HeldOpenParams(Params, frozen=True):
    """Open longer than ``after_s``; major inside the night window (local time)."""

    after_s: int = 180
    night_from: str = "22:00"
    night_until: str = "06:00"


class DoorState(msgspec.Struct, frozen=True):
    """Since when the leaf is open (None: closed), and whether that raised."""

    open_since: int | None = None
    active: bool = False


class HeldOpen(Rule[HeldOpenParams, DoorState]):
    """The door leaf stays open: from ``open``/``close``/``held_open`` events and telemetry."""

    id = "door.held_open"
    kinds = DOOR
    channels = frozenset({Channel.TELEMETRY, Channel.EVENT})
    events = frozenset({"open", "close", "held_open"})
    title_zh = "单元门长时间未关"
    action_zh = "请到现场关好单元门，并检查闭门器和门磁。"
    params_type = HeldOpenParams
    state_type = DoorState

    def observe(self, ctx: Ctx[HeldOpenParams, DoorState], obs: Observation) -> None:
        """Track the leaf; a timer fires when it has been open too long."""
        state = ctx.state
        since = obs.ts
        if obs.channel is Channel.TELEMETRY:
            is_open = bool(obs.values["open"])
        elif obs.event == "held_open":  # the door's own report: open for duration_s already
            is_open = True
            since = obs.ts - int(obs.values["duration_s"]) * 1000
        else:
            is_open = obs.event == "open"
        if is_open:
            if state.open_since is None or since < state.open_since:
                ctx.state = DoorState(since, state.active)
                if not state.active:
                    ctx.set_timer(since + ctx.params.after_s * 1000)
        elif state.open_since is not None and obs.ts >= state.open_since:
            ctx.cancel_timer()
            if state.active:
                ctx.clear()
            ctx.state = DoorState()

    def on_timer(self, ctx: Ctx[HeldOpenParams, DoorState]) -> None:
        """Still open: minor by day, major at night."""
        state = ctx.state
        if state.open_since is None or state.active:
            return
        params = ctx.params
        night = in_daily_window(ctx.site.local(ctx.now_ms), params.night_from, params.night_until)
        minutes = max(1, round((ctx.now_ms - state.open_since) / 60_000))
        ctx.raise_alert(
            Severity.MAJOR if night else Severity.MINOR,
            since_ms=state.open_since,
            facts={"minutes": minutes},
        )
        ctx.state = DoorState(state.open_since, active=True)

    def title(self, facts: Mapping[str, Any]) -> str:
        """单元门长时间未关（已开 N 分钟）."""
        return f"{self.title_zh}（已开{facts.get('minutes', '?')}分钟）"


class BruteForceParams(Params, frozen=True):
    """``failures`` refusals at one door within ``window_s``."""

    failures: int = 5
    window_s: int = 120


class BruteForceState(msgspec.Struct, frozen=True):
    """The times of the latest refusals (at most ``failures``)."""

    failures: tuple[int, ...] = ()


class BruteForce(Rule[BruteForceParams, BruteForceState]):
    """Many ``unlock_failed`` in a short time: someone trying faces, cards or PINs."""

    id = "door.brute_force"
    kinds = DOOR
    channels = frozenset({Channel.EVENT})
    events = frozenset({"unlock_failed"})
    title_zh = "门禁多次开门失败"
    action_zh = "可能有人在试图强行开门：请到现场查看，必要时调取监控。"
    params_type = BruteForceParams
    state_type = BruteForceState

    def observe(self, ctx: Ctx[BruteForceParams, BruteForceState], obs: Observation) -> None:
        """Count refusals in a sliding window."""
        params = ctx.params
        start = obs.ts - params.window_s * 1000
        earlier = [t for t in ctx.state.failures if t > start]
        recent = (*earlier[-(params.failures - 1) :], obs.ts) if params.failures > 1 else (obs.ts,)
        ctx.state = BruteForceState(recent)
        if len(recent) >= params.failures:
            facts = {"count": len(recent), "minutes": round(params.window_s / 60, 1)}
            ctx.raise_alert(Severity.MAJOR, since_ms=recent[0], latch=True, facts=facts)

    def title(self, facts: Mapping[str, Any]) -> str:
        """门禁多次开门失败（N 分钟内 M 次）."""
        minutes = facts.get("minutes", 2)
        shown = int(minutes) if float(minutes).is_integer() else minutes
        return f"{self.title_zh}（{shown}分钟内{facts.get('count', '?')}次）"


RULES = (Forced(), Tamper(), HeldOpen(), BruteForce())
