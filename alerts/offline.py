"""``device.offline``, the one rule every kind has: offline by last will, or by silence.

A device is silent once nothing has come from it for ``intervals`` times its
kind's slowest regular reporting interval (``DeviceKind.telemetry_interval_s``).
Any message from it ends the alert. A device is watched from its first message
on: one that never spoke is a deployment problem, not an outage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from alerts.rule import Ctx, Observation, Params, Rule, Severity
from devices import KINDS
from devices.contract import Channel

# An offline meter is a blind spot in welfare care, so it is as urgent as a door.
DEFAULT_SEVERITY = {
    "door": Severity.MAJOR,
    "water_meter": Severity.MAJOR,
    "patrol_robot": Severity.MAJOR,
    "streetlight": Severity.MINOR,
}


class OfflineParams(Params, frozen=True):
    """Silence threshold in reporting intervals; severity by kind."""

    intervals: float = 3
    severity: dict[str, Severity] = msgspec.field(default_factory=dict)


class OfflineState(msgspec.Struct, frozen=True):
    """When the device last spoke, and whether it is held offline."""

    last_seen: int = 0
    active: bool = False


class OfflineRule(Rule[OfflineParams, OfflineState]):
    """Offline by last will (``{"online": false}``) or by silence."""

    id = "device.offline"
    title_zh = "设备离线"
    action_zh = "请检查设备供电和网络连接。"
    channels = frozenset(
        {Channel.TELEMETRY, Channel.EVENT, Channel.STATUS, Channel.CMD_ACK, Channel.SNAPSHOT}
    )
    params_type = OfflineParams
    state_type = OfflineState

    def observe(self, ctx: Ctx[OfflineParams, OfflineState], obs: Observation) -> None:
        """A goodbye (will or announced) raises; anything else resets the silence timer."""
        state = ctx.state
        if obs.channel is Channel.STATUS and obs.values.get("online") is False:
            ctx.cancel_timer()
            if not state.active:
                cause = "will" if obs.values.get("will") else "announced"
                self._raise(ctx, obs.ts, cause)
            ctx.state = OfflineState(max(state.last_seen, obs.ts), active=True)
            return
        # Silence is measured from when a message came, in event time: a device whose
        # clock runs behind, or a retained "online" status (the broker would have put
        # the last will in its place if the connection had died), is alive now.
        seen = max(state.last_seen, obs.ts, ctx.clock_ms)
        if state.active:
            ctx.clear()
        interval_ms = KINDS[obs.device.kind].telemetry_interval_s * 1000
        ctx.set_timer(seen + int(ctx.params.intervals * interval_ms))
        ctx.state = OfflineState(seen)

    def on_timer(self, ctx: Ctx[OfflineParams, OfflineState]) -> None:
        """Silent for too long."""
        state = ctx.state
        if not state.active:
            self._raise(ctx, state.last_seen, "silent")
            ctx.state = OfflineState(state.last_seen, active=True)

    def _raise(self, ctx: Ctx[OfflineParams, OfflineState], since_ms: int, cause: str) -> None:
        device = ctx.require_device()
        severity = ctx.params.severity.get(device.kind) or DEFAULT_SEVERITY.get(
            device.kind, Severity.MAJOR
        )
        facts = {"cause": cause, "kind": device.kind, "kind_zh": KINDS[device.kind].title_zh}
        ctx.raise_alert(severity, since_ms=since_ms, facts=facts)

    def title(self, facts: Mapping[str, Any]) -> str:
        """设备离线, named by kind and cause."""
        how = {"will": "（断线）", "announced": "（已下线）"}.get(str(facts.get("cause")), "")
        return f"{facts.get('kind_zh', '设备')}离线{how}"

    def action(self, facts: Mapping[str, Any]) -> str:
        """For a water meter, the welfare check comes first."""
        if facts.get("kind") == "water_meter":
            return "水表离线期间无法监测老人用水：请尽快检修，并先电话联系老人确认安全。"
        return self.action_zh
