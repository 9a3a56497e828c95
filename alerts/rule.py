"""What an alert rule is: the base class every kind's ``rules.py`` builds on.

A rule watches observations (decoded messages) of some device kinds, keeps a
small immutable state per key (usually per device), sets at most one timer per
key on the engine's event-time clock, and reports *findings*: a condition
raised or cleared for a subject (a device, a circuit, a scene spot). It never
touches SQL, MQTT or the wall clock: the engine persists its state and timers,
and the lifecycle turns findings into alerts.

A rule may also listen to other rules' findings (``listens_to``): that is how
cross-device rules such as ``light.circuit_down`` group lamp failures.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import msgspec

from devices.contract import Channel, DeviceRecord
from influx.lineprotocol import FieldValue

if TYPE_CHECKING:
    from alerts.site import Site


class Severity(StrEnum):
    """How urgent an alert is; critical and major ones escalate when nobody acknowledges."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"


@dataclass(frozen=True, slots=True)
class Observation:
    """One accepted message as rules see it: the device, what it said, and when (``ts``)."""

    device: DeviceRecord
    channel: Channel
    event: str  # the event's name; "" for other channels
    ts: int
    values: Mapping[str, FieldValue]


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's verdict on a subject at ``ts``: the condition is raised (or cleared)."""

    rule: str
    community: str
    subject: str
    kind: str
    raised: bool
    ts: int
    severity: Severity = Severity.MINOR
    device: DeviceRecord | None = None  # the device whose message (or silence) led here
    device_id: str = ""  # the device the alert is about; "" for a circuit
    since_ms: int = 0  # when the condition began (may precede ``ts``)
    facts: Mapping[str, Any] = field(default_factory=dict)  # for the message, JSON-able
    latch: bool = False  # an event: only a person resolves it
    place: str = ""  # where, in words, without the community's name
    lat: float | None = None
    lon: float | None = None
    group: str = ""  # "rule:subject" of an alert that would absorb this one (a circuit)


class Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of every rule's parameters; ``enabled: false`` in a community's settings: rule off."""

    enabled: bool = True


class NoState(msgspec.Struct, frozen=True):
    """The state of a rule that keeps none (it is never persisted)."""


P = TypeVar("P", bound=Params)
S = TypeVar("S", bound=msgspec.Struct)


class Slot:
    """One rule's state, timer and parameters for one key, as the engine holds them."""

    __slots__ = ("community", "due_ms", "key", "params", "rule", "state")

    def __init__(
        self, rule: Rule[Any, Any], key: str, community: str, state: Any, params: Any
    ) -> None:
        self.rule = rule
        self.key = key
        self.community = community
        self.state = state
        self.params = params
        self.due_ms: int | None = None


class Sink(Protocol):
    """What a rule's context reports to: the engine."""

    def emit(self, finding: Finding) -> None:
        """Take a finding."""
        ...

    def state_changed(self, slot: Slot) -> None:
        """Note that a slot's state must be persisted."""
        ...

    def schedule(self, slot: Slot, due_ms: int | None) -> None:
        """Set (or with None, cancel) a slot's one timer."""
        ...


class Ctx(Generic[P, S]):
    """What a rule sees while it runs: its state and parameters for one key, the site, the time."""

    __slots__ = ("_sink", "_slot", "clock_ms", "device", "now_ms", "site")

    def __init__(
        self,
        sink: Sink,
        slot: Slot,
        site: Site,
        device: DeviceRecord | None,
        now_ms: int,
        clock_ms: int | None = None,
    ) -> None:
        self._sink = sink
        self._slot = slot
        self.site = site
        self.device = device
        self.now_ms = now_ms  # the observation's ts, or when the timer was due
        self.clock_ms = now_ms if clock_ms is None else clock_ms  # the engine's event time

    @property
    def state(self) -> S:
        """The rule's state for this key (immutable: assign a new one to change it)."""
        return self._slot.state  # type: ignore[no-any-return]

    @state.setter
    def state(self, value: S) -> None:
        self._slot.state = value
        self._sink.state_changed(self._slot)

    @property
    def params(self) -> P:
        """The rule's parameters for this community (and household)."""
        return self._slot.params  # type: ignore[no-any-return]

    def require_device(self) -> DeviceRecord:
        """The device, for rules keyed by device (the engine always sets it for them)."""
        if self.device is None:
            raise LookupError(f"{self._slot.rule.id} ran without a device for {self._slot.key}")
        return self.device

    @property
    def timer_ms(self) -> int | None:
        """When this key's timer is due, if set."""
        return self._slot.due_ms

    def set_timer(self, due_ms: int) -> None:
        """Call ``on_timer`` for this key when event time reaches ``due_ms`` (replacing any)."""
        self._sink.schedule(self._slot, due_ms)

    def cancel_timer(self) -> None:
        """Drop this key's timer."""
        self._sink.schedule(self._slot, None)

    def raise_alert(
        self,
        severity: Severity,
        *,
        since_ms: int | None = None,
        facts: Mapping[str, Any] | None = None,
        latch: bool = False,
        subject: str | None = None,
        place: str | None = None,
        lat: float | None = None,
        lon: float | None = None,
        device_id: str | None = None,
    ) -> None:
        """Report the condition present for ``subject`` (default: this key)."""
        device = self.device
        if device_id is None:
            device_id = device.device_id if device else ""
        self._sink.emit(
            Finding(
                rule=self._slot.rule.id,
                community=self.site.id,
                subject=subject or self._slot.key,
                kind=device.kind if device else self._slot.rule.subject_kind,
                raised=True,
                ts=self.now_ms,
                severity=severity,
                device=device,
                device_id=device_id,
                since_ms=self.now_ms if since_ms is None else since_ms,
                facts=facts or {},
                latch=latch,
                place=place if place is not None else (device.place if device else ""),
                lat=lat if lat is not None else (device.lat if device else None),
                lon=lon if lon is not None else (device.lon if device else None),
            )
        )

    def clear(self, subject: str | None = None) -> None:
        """Report the condition gone for ``subject`` (default: this key)."""
        device = self.device
        self._sink.emit(
            Finding(
                rule=self._slot.rule.id,
                community=self.site.id,
                subject=subject or self._slot.key,
                kind=device.kind if device else self._slot.rule.subject_kind,
                raised=False,
                ts=self.now_ms,
                device=device,
                device_id=device.device_id if device else "",
            )
        )


class Rule(ABC, Generic[P, S]):
    """An alert rule; subclasses set the class attributes and override the hooks they need."""

    id: ClassVar[str]
    title_zh: ClassVar[str]  # what happened, e.g. 单元门被强行打开
    action_zh: ClassVar[str]  # what to do, e.g. 请立即到现场查看
    kinds: ClassVar[frozenset[str]] = frozenset()  # whose observations it gets; empty: every kind
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.TELEMETRY})
    events: ClassVar[frozenset[str] | None] = None  # event names wanted; None: all
    listens_to: ClassVar[frozenset[str]] = frozenset()  # rule ids whose findings it gets
    keyed_by_device: ClassVar[bool] = True  # state key = device id (else ``key`` says)
    subject_kind: ClassVar[str] = ""  # the kind of a subject that is no device (a circuit)
    params_type: type[P]
    state_type: type[S]

    def wants(self, kind: str, channel: Channel, event: str) -> bool:
        """Whether observations of this kind, channel and event name concern the rule."""
        if self.kinds and kind not in self.kinds:
            return False
        if channel not in self.channels:
            return False
        return channel is not Channel.EVENT or self.events is None or event in self.events

    def key(self, obs: Observation) -> str:
        """The state key of an observation (for rules not keyed by device)."""
        return obs.device.device_id

    def finding_key(self, finding: Finding) -> str | None:
        """The state key of another rule's finding, or None if it is no concern of this rule."""
        return None

    def params_for(self, site: Site, device: DeviceRecord | None) -> P:
        """Defaults, overridden by the community's settings (rules may add per-device ones)."""
        return msgspec.convert(dict(site.overrides(self.id)), self.params_type)

    def observe(self, ctx: Ctx[P, S], obs: Observation) -> None:
        """React to an observation."""

    def on_timer(self, ctx: Ctx[P, S]) -> None:
        """React to this key's timer (``ctx.now_ms`` is when it was due)."""

    def on_finding(self, ctx: Ctx[P, S], finding: Finding) -> str:
        """React to another rule's finding; return a group ("rule:subject") to file it under."""
        return ""

    def title(self, facts: Mapping[str, Any]) -> str:
        """What happened, in Chinese, for the message."""
        return self.title_zh

    def action(self, facts: Mapping[str, Any]) -> str:
        """What to do, in Chinese, for the message."""
        return self.action_zh


class EventRule(Rule[Params, NoState]):
    """An alert straight from one device event (door forced, tamper): a person resolves it."""

    channels = frozenset({Channel.EVENT})
    severity: ClassVar[Severity]
    params_type = Params
    state_type = NoState

    def observe(self, ctx: Ctx[Params, NoState], obs: Observation) -> None:
        """Every such event raises (a repeat while open counts on the same alert)."""
        ctx.raise_alert(self.severity, latch=True)


def grouped(rule_id: str, subject: str) -> str:
    """The ``group`` of a finding that the alert ``rule_id``/``subject`` absorbs."""
    return f"{rule_id}:{subject}"
