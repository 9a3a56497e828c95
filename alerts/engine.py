"""The rule engine: messages in, findings out, on event time.

``handle`` decodes a message with ingest's own ``decode_message`` (the same
checks, the same registry), turns it into an ``Observation`` and runs the rules
that want it. Time is the messages' ``ts``. A device's own timers due before
its message fire before the message is evaluated (a device's messages arrive in
order); everyone else's wait for ``advance``, which the caller moves to a
watermark: the newest ``ts`` seen once stragglers from other connections had
time to arrive (see ``alerts.service``), so no device is judged silent while
its messages are still on their way.

Timers are one per rule and key, kept in a heap with lazy deletion: moving a
timer later pushes nothing (the old entry, when it pops, re-queues itself), so
the heap holds about one entry per armed key however often devices report.

The engine remembers which states and timers changed; ``take_changes`` hands
them to the store, which persists them in the same transaction as the alerts
they led to, and ``restore`` loads them back after a restart.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from alerts.offline import OfflineRule
from alerts.rule import Ctx, Finding, NoState, Observation, Rule, Slot
from alerts.site import Site
from devices import KINDS
from devices.contract import Channel, DeviceRecord
from devices.points import CMD_ACK_MEASUREMENT, SNAPSHOT_MEASUREMENT, STATUS_MEASUREMENT
from imagery.events import CAMERA_DECODER, camera_topic_community
from influx.lineprotocol import FieldValue
from ingest.decode import (
    Accepted,
    Ignored,
    Limits,
    Outcome,
    Reason,
    Rejected,
    decode_message,
)

log = logging.getLogger("gridwatch.alerts")

_SHARED_CHANNELS = {
    STATUS_MEASUREMENT: Channel.STATUS,
    CMD_ACK_MEASUREMENT: Channel.CMD_ACK,
    SNAPSHOT_MEASUREMENT: Channel.SNAPSHOT,
}
# A device clock running fast must not drag every other device's timers forward:
# a message moves event time at most this far past its arrival.
DEFAULT_MAX_SKEW_MS = 5_000
# A message without ts arriving this far ahead of the newest ts seen belongs to a replay.
ARRIVAL_AHEAD_MS = 60_000


def default_rules() -> list[Rule[Any, Any]]:
    """Every kind's rules (``DeviceKind.rules``), then the rules that apply to every kind."""
    return [rule for kind in KINDS.values() for rule in kind.rules] + [OfflineRule()]


@dataclass(frozen=True)
class Directory:
    """The registry as the engine needs it: devices by id, communities by id."""

    devices: Mapping[str, DeviceRecord]
    sites: Mapping[str, Site]


@dataclass(frozen=True, slots=True)
class StateRow:
    """One persisted rule state; ``state`` None means the row is to be deleted."""

    rule: str
    key: str
    community: str
    state: dict[str, Any] | None
    due_ms: int | None


class Engine:
    """Runs the rules over observations in event-time order; see the module docstring."""

    def __init__(
        self,
        rules: Sequence[Rule[Any, Any]],
        directory: Directory,
        *,
        limits: Limits | None = None,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    ) -> None:
        ids = [rule.id for rule in rules]
        if len(set(ids)) != len(ids):
            raise ValueError(f"rule ids must be unique: {sorted(ids)}")
        self._rules = {rule.id: rule for rule in rules}
        self._listeners: dict[str, list[Rule[Any, Any]]] = {}
        for rule in rules:
            for other in rule.listens_to:
                self._listeners.setdefault(other, []).append(rule)
        self._dispatch: dict[tuple[str, Channel, str], list[Rule[Any, Any]]] = {}
        self._limits = limits or Limits()
        self._max_skew_ms = max_skew_ms
        self._directory = directory
        self._slots: dict[tuple[str, str], Slot] = {}
        self._timers: list[tuple[int, int, Slot]] = []
        self._queued: dict[Slot, int] = {}  # the earliest heap entry of each armed slot
        self._order = itertools.count()
        self._changed: set[Slot] = set()
        self._out: list[Finding] = []
        self._bad_settings: set[tuple[str, str]] = set()
        self._kind_rules: dict[str, list[Rule[Any, Any]]] = {}
        self.now_ms = 0  # event time: every timer due by then has fired
        self.newest_ms = 0  # the newest ts seen (capped by arrival + skew)
        self.outcomes: Counter[str] = Counter()  # messages by outcome, for the service's log

    # --- registry -----------------------------------------------------------------

    def use_directory(self, directory: Directory) -> None:
        """Switch to a newer registry snapshot; parameters are worked out again on next use."""
        self._directory = directory
        for slot in self._slots.values():
            slot.params = None

    # --- input --------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, received_ms: int) -> Outcome:
        """Decode one message (as ingest does) and run the rules that want it."""
        community = camera_topic_community(topic)
        if community is not None:
            return self._camera_report(community, payload, received_ms)
        outcome = decode_message(
            topic,
            payload,
            devices=self._directory.devices,
            now_ms=received_ms,
            limits=self._limits,
        )
        if isinstance(outcome, Accepted):
            self.outcomes["accepted"] += 1
            observation = self._observation(outcome)
            if observation is None:
                return outcome
            if observation.channel is Channel.SNAPSHOT or observation.values.get("will"):
                # No ts of its own: storage stamps it with the arrival time.
                when = self._arrival_in_event_time(received_ms)
                self.observe(replace(observation, ts=when), received_ms, moves_time=False)
            else:
                # The imagery service's checkpoint evidence is about the robot, not from
                # it, and maybe late: like a camera report, no sign of life.
                by_backend = observation.values.get("source") == "imagery"
                self.observe(observation, received_ms, named_only=by_backend)
        else:
            self.outcomes[type(outcome).__name__.lower()] += 1
        return outcome

    def _camera_report(self, community: str, payload: bytes, received_ms: int) -> Outcome:
        """The imagery service's camera_fault / camera_ok: an event of the robot it is about.

        The report's ``ts`` is the frame's, so it moves event time as the robot's own
        messages do.
        """
        outcome = self._decode_camera_report(community, payload)
        if isinstance(outcome, Rejected):
            self.outcomes["rejected"] += 1
            return outcome
        self.outcomes["camera"] += 1
        # The imagery service's word, not the robot's, and maybe late (a backlog of
        # frames): rules that take any event as a sign of life (device.offline) must
        # not hear the robot in it.
        self.observe(outcome, received_ms, named_only=True)
        return Ignored("imagery")

    def _decode_camera_report(self, community: str, payload: bytes) -> Observation | Rejected:
        try:
            report = CAMERA_DECODER.decode(payload)
        except msgspec.DecodeError as exc:  # ValidationError included
            return Rejected(Reason.SCHEMA, f"camera report: {exc}"[:300], "patrol_robot")
        device = self._directory.devices.get(report.device_id)
        if device is None:
            return Rejected(Reason.UNKNOWN_DEVICE, f"{report.device_id} is not registered")
        if community != report.community or (device.community, device.kind) != (
            community,
            report.kind,
        ):
            detail = f"{report.device_id} is not a {report.kind} of {community}"
            return Rejected(Reason.DEVICE_MISMATCH, detail, report.kind)
        values: dict[str, FieldValue] = {
            "since_ms": report.since_ms,
            "bad_frames": report.bad_frames,
            # Ids are [A-Za-z0-9_-]: a comma joins them unambiguously into one field value.
            "snapshot_ids": ",".join(report.snapshot_ids),
            "flags": ",".join(report.flags),
        }
        return Observation(device, Channel.EVENT, report.event, report.ts, values)

    def _observation(self, accepted: Accepted) -> Observation | None:
        point = accepted.point
        device = self._directory.devices[point.tags["device_id"]]
        kind = KINDS[device.kind]
        if point.measurement == kind.measurement:
            return Observation(device, Channel.TELEMETRY, "", point.time_ms, point.fields)
        if point.measurement == kind.measurement_event:
            values = dict(point.fields)
            for name in kind.event_tag_fields:  # enum fields that storage keeps as tags
                if name in point.tags:
                    values[name] = point.tags[name]
            return Observation(device, Channel.EVENT, point.tags["event"], point.time_ms, values)
        channel = _SHARED_CHANNELS.get(point.measurement)
        if channel is None:
            return None
        return Observation(device, channel, "", point.time_ms, point.fields)

    def _arrival_in_event_time(self, received_ms: int) -> int:
        """When a message without ``ts`` (a last will, a snapshot) happened, in event time.

        Its arrival, unless that is far ahead of the stream (a replay of the past, where
        the wall clock is hours ahead): then the stream's present, the newest ``ts``.
        """
        present = max(self.newest_ms, self.now_ms)
        if present and received_ms > present + ARRIVAL_AHEAD_MS:
            return present
        return received_ms

    def observe(
        self,
        obs: Observation,
        received_ms: int | None = None,
        *,
        moves_time: bool = True,
        named_only: bool = False,
    ) -> None:
        """Run the rules for one observation, after the device's own timers due before it.

        Other devices' timers wait for ``advance``: messages from different devices
        may arrive out of order (an accelerated replay over hundreds of connections),
        and a device's silence must not be judged before its own messages are in.
        ``named_only``: only rules that name the event run, not those that take any.
        """
        if moves_time:
            arrived = (
                obs.ts if received_ms is None else min(obs.ts, received_ms + self._max_skew_ms)
            )
            self.newest_ms = max(self.newest_ms, arrived)
        device = obs.device
        site = self._directory.sites.get(device.community)
        if site is None:
            return
        self._fire_own(device, obs.ts, inclusive=False)
        for rule in self._rules_for(device.kind, obs.channel, obs.event):
            if named_only and rule.events is None:
                continue
            key = device.device_id if rule.keyed_by_device else rule.key(obs)
            slot = self._slot(rule, key, site, device)
            if slot.params.enabled:
                rule.observe(Ctx(self, slot, site, device, obs.ts, max(self.now_ms, obs.ts)), obs)
        self._fire_own(device, obs.ts, inclusive=True)  # timers this message set in the past

    def advance(self, now_ms: int | None = None) -> None:
        """Move event time to ``now_ms`` (default: the newest ``ts`` seen), firing what is due."""
        target = self.newest_ms if now_ms is None else now_ms
        self._fire(target, inclusive=True)
        self.now_ms = max(self.now_ms, target)

    def take_findings(self) -> list[Finding]:
        """The findings since the last call, in order (a group's before its members)."""
        out, self._out = self._out, []
        return out

    # --- rules' callbacks (the Sink protocol) -------------------------------------

    def emit(self, finding: Finding) -> None:
        """Take a rule's finding; listening rules see it first and may file it under a group."""
        group = ""
        for listener in self._listeners.get(finding.rule, ()):
            key = listener.finding_key(finding)
            site = self._directory.sites.get(finding.community)
            if key is None or site is None:
                continue
            slot = self._slot(listener, key, site, finding.device)
            if slot.params.enabled:
                ctx: Ctx[Any, Any] = Ctx(self, slot, site, finding.device, finding.ts)
                group = listener.on_finding(ctx, finding) or group
        self._out.append(replace(finding, group=group) if group else finding)

    def state_changed(self, slot: Slot) -> None:
        """Remember to persist ``slot``."""
        self._changed.add(slot)

    def schedule(self, slot: Slot, due_ms: int | None) -> None:
        """Set or cancel ``slot``'s timer."""
        slot.due_ms = due_ms
        self._changed.add(slot)
        queued = self._queued.get(slot)
        if due_ms is not None and (queued is None or due_ms < queued):
            heapq.heappush(self._timers, (due_ms, next(self._order), slot))
            self._queued[slot] = due_ms

    # --- timers -------------------------------------------------------------------

    def _fire(self, until_ms: int, *, inclusive: bool) -> None:
        timers = self._timers
        while timers and (timers[0][0] < until_ms or (inclusive and timers[0][0] == until_ms)):
            due, _, slot = heapq.heappop(timers)
            if self._queued.get(slot) != due:
                continue  # superseded by an earlier entry for the same slot
            del self._queued[slot]
            if slot.due_ms is None:
                continue  # cancelled
            if slot.due_ms > due:  # moved later meanwhile: queue it where it is now
                heapq.heappush(timers, (slot.due_ms, next(self._order), slot))
                self._queued[slot] = slot.due_ms
                continue
            slot.due_ms = None
            self._changed.add(slot)
            self.now_ms = max(self.now_ms, due)
            self._run_timer(slot, due)

    def _fire_own(self, device: DeviceRecord, before_ms: int, *, inclusive: bool) -> None:
        """Fire the device's own timers due before (or at) ``before_ms``, in time order."""
        due: list[tuple[int, str, Slot]] = []
        for rule in self._own_rules(device.kind):
            slot = self._slots.get((rule.id, device.device_id))
            if slot is None or slot.due_ms is None:
                continue
            if slot.due_ms < before_ms or (inclusive and slot.due_ms == before_ms):
                due.append((slot.due_ms, rule.id, slot))
        for at_ms, _, own in sorted(due):
            own.due_ms = None  # its heap entry, when it pops, is found stale
            self._changed.add(own)
            self._run_timer(own, at_ms)

    def _own_rules(self, kind: str) -> list[Rule[Any, Any]]:
        rules = self._kind_rules.get(kind)
        if rules is None:
            rules = [
                r
                for r in self._rules.values()
                if r.keyed_by_device and (not r.kinds or kind in r.kinds)
            ]
            self._kind_rules[kind] = rules
        return rules

    def _run_timer(self, slot: Slot, due: int) -> None:
        site = self._directory.sites.get(slot.community)
        if site is None:
            return
        rule = slot.rule
        device = self._directory.devices.get(slot.key) if rule.keyed_by_device else None
        if rule.keyed_by_device and device is None:
            return  # the device left the registry
        params = self._params(slot, site, device)
        if params.enabled:
            rule.on_timer(Ctx(self, slot, site, device, due))

    # --- slots --------------------------------------------------------------------

    def _rules_for(self, kind: str, channel: Channel, event: str) -> list[Rule[Any, Any]]:
        wanted = self._dispatch.get((kind, channel, event))
        if wanted is None:
            wanted = [r for r in self._rules.values() if r.wants(kind, channel, event)]
            self._dispatch[(kind, channel, event)] = wanted
        return wanted

    def _slot(
        self, rule: Rule[Any, Any], key: str, site: Site, device: DeviceRecord | None
    ) -> Slot:
        slot = self._slots.get((rule.id, key))
        if slot is None:
            slot = Slot(rule, key, site.id, rule.state_type(), None)
            self._slots[(rule.id, key)] = slot
        if slot.params is None:
            self._params(slot, site, device)
        return slot

    def _params(self, slot: Slot, site: Site, device: DeviceRecord | None) -> Any:
        if slot.params is None:
            rule = slot.rule
            try:
                slot.params = rule.params_for(site, device)
            except msgspec.ValidationError as exc:
                if (rule.id, site.id) not in self._bad_settings:
                    self._bad_settings.add((rule.id, site.id))
                    log.warning("settings of %s for %s ignored: %s", site.id, rule.id, exc)
                slot.params = rule.params_type()
        return slot.params

    # --- persistence --------------------------------------------------------------

    def take_changes(self) -> list[StateRow]:
        """States and timers changed since the last call (None state: delete the row)."""
        rows = []
        for slot in self._changed:
            rule = slot.rule
            if rule.state_type is NoState:
                continue
            idle = slot.due_ms is None and slot.state == rule.state_type()
            state = None if idle else msgspec.to_builtins(slot.state)
            rows.append(StateRow(rule.id, slot.key, slot.community, state, slot.due_ms))
        self._changed.clear()
        return rows

    def restore(self, rows: Iterable[StateRow]) -> int:
        """Load persisted states and timers (after a restart); returns how many were restored."""
        restored = 0
        for row in rows:
            rule = self._rules.get(row.rule)
            if rule is None or row.state is None:
                continue  # a rule that no longer exists
            try:
                state = msgspec.convert(row.state, rule.state_type)
            except msgspec.ValidationError as exc:
                log.warning("dropped the unreadable state of %s %s: %s", row.rule, row.key, exc)
                continue
            slot = Slot(rule, row.key, row.community, state, None)
            self._slots[(rule.id, row.key)] = slot
            if row.due_ms is not None:
                self.schedule(slot, row.due_ms)
            restored += 1
        self._changed.clear()
        return restored
