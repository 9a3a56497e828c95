"""The simulated-device base class that each kind's behaviour builds on.

A simulated device keeps its own agenda of timed actions (next heartbeat, next
visitor, next flow stop...). The simulator runner asks every device for its
next due time and runs the earliest, so the stream of all devices together is
in event-time order and depends only on the seed and the start time.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from devices.contract import Channel, Command, Community, DeviceRecord

Action = Callable[[int], None]
QUARTER_HOUR_MS = 900_000


@dataclass(slots=True)
class Outgoing:
    """One message a simulated device publishes: JSON, or a snapshot's JPEG in ``image``.

    A snapshot's ``payload`` holds its ``snapshot_id``, the last level of its topic.
    """

    channel: Channel
    payload: dict[str, Any]
    retain: bool = False
    image: bytes | None = None


# An agenda entry: (due_ms, order, action). A plain tuple, so the heap compares in C;
# ``order`` is unique, so two entries never get as far as comparing their actions.
_Entry = tuple[int, int, Action]


class SimulatedDevice(ABC):
    """Agenda, ``seq`` numbering, status and command handling common to every kind.

    Subclasses schedule actions with ``at`` and publish with ``send_telemetry`` /
    ``send_event``; commands arrive at ``cmd_<name>`` methods, which return an
    error string or None.
    """

    telemetry_interval_ms: int = 60_000
    # The kind's command argument schemas; set by DeviceKind.simulate().
    command_args: Mapping[str, type[msgspec.Struct]] = {}

    def __init__(
        self, record: DeviceRecord, community: Community, rng: random.Random, start_ms: int
    ) -> None:
        self.record = record
        self.community = community
        self.rng = rng
        self.seq = 0
        self._agenda: list[_Entry] = []
        self._order = itertools.count()
        self._out: list[Outgoing] = []
        self._beats = 0  # the heartbeat cycle now running; ``report_now`` starts a new one
        # The zone's UTC offset, valid within one quarter hour (zones change offsets on one).
        self._offset_ms, self._offset_from, self._offset_until = 0, 0, -1
        # Spread heartbeats over the interval, as real devices powered on at random times.
        first = start_ms + rng.randrange(self.telemetry_interval_ms)
        self.at(first, lambda t: self._heartbeat(t, 0))

    # --- agenda ---------------------------------------------------------------

    def at(self, due_ms: int, action: Action) -> None:
        """Run ``action(due_ms)`` when simulated time reaches ``due_ms``."""
        heapq.heappush(self._agenda, (due_ms, next(self._order), action))

    def next_due_ms(self) -> int:
        """When this device next has something to do."""
        return self._agenda[0][0]

    def run_due(self, now_ms: int) -> list[Outgoing]:
        """Run every action due by ``now_ms`` and return what they published."""
        agenda = self._agenda
        while agenda and agenda[0][0] <= now_ms:
            due_ms, _, action = heapq.heappop(agenda)
            action(due_ms)
        return self.drain()

    def drain(self) -> list[Outgoing]:
        """Take the messages published so far."""
        out, self._out = self._out, []
        return out

    # --- publishing -----------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send_telemetry(self, ts: int, **fields: Any) -> None:
        """Publish a telemetry message at ``ts``."""
        self._out.append(Outgoing(Channel.TELEMETRY, {"ts": ts, "seq": self._next_seq(), **fields}))

    def send_event(self, ts: int, event: str, **fields: Any) -> None:
        """Publish an event at ``ts``."""
        payload = {"ts": ts, "seq": self._next_seq(), "event": event, **fields}
        self._out.append(Outgoing(Channel.EVENT, payload))

    def send_snapshot(self, snapshot_id: str, image: bytes) -> None:
        """Publish a JPEG on ``snapshot/{snapshot_id}`` (kinds that send snapshots)."""
        self._out.append(Outgoing(Channel.SNAPSHOT, {"snapshot_id": snapshot_id}, image=image))

    def status(self, ts: int | None, online: bool) -> Outgoing:
        """The retained status message (``ts`` None for the last will)."""
        payload: dict[str, Any] = {"online": online}
        if ts is not None:
            payload["ts"] = ts
        return Outgoing(Channel.STATUS, payload, retain=True)

    def _heartbeat(self, ts: int, cycle: int) -> None:
        if cycle != self._beats:
            return  # superseded by report_now
        self.send_telemetry(ts, **self.telemetry(ts))
        self.at(ts + self.heartbeat_interval_ms(), lambda t: self._heartbeat(t, cycle))

    def report_now(self, ts: int) -> None:
        """Send telemetry now and count the next heartbeat from here (after a change of mode)."""
        self._beats += 1
        self._heartbeat(ts, self._beats)

    def heartbeat_interval_ms(self) -> int:
        """Time to the next heartbeat; kinds whose rate depends on their mode override it."""
        return self.telemetry_interval_ms

    @abstractmethod
    def telemetry(self, ts: int) -> dict[str, Any]:
        """The kind's telemetry fields at ``ts`` (without ts/seq)."""

    def local_time(self, ts: int) -> datetime:
        """``ts`` as a wall-clock time in the community's time zone."""
        return datetime.fromtimestamp(ts / 1000, _zone(self.community.timezone))

    def _local_ms(self, ts: int) -> int:
        """``ts`` shifted by the zone's offset: what a UTC clock would read at the local time."""
        if not self._offset_from <= ts < self._offset_until:
            offset = self.local_time(ts).utcoffset()
            self._offset_ms = int(offset.total_seconds() * 1000) if offset else 0
            self._offset_from = ts - ts % QUARTER_HOUR_MS
            self._offset_until = self._offset_from + QUARTER_HOUR_MS
        return ts + self._offset_ms

    def local_hour(self, ts: int) -> int:
        """The local hour at ``ts`` (cheaper than ``local_time(ts).hour``, which it equals)."""
        return self._local_ms(ts) // 3_600_000 % 24

    def local_day(self, ts: int) -> int:
        """The local calendar day at ``ts``, as days since 1970-01-01."""
        return self._local_ms(ts) // 86_400_000

    # --- commands -------------------------------------------------------------

    def _carry_out(self, command: Command, now_ms: int) -> str | None:
        """Check the arguments against the kind's schema, then run ``cmd_<name>``."""
        schema = self.command_args.get(command.name)
        handler = getattr(self, f"cmd_{command.name}", None)
        if schema is None or handler is None:
            return f"unknown command {command.name}"
        try:
            args = msgspec.to_builtins(msgspec.convert(command.args, schema))
        except msgspec.ValidationError as exc:
            return f"bad arguments: {exc}"
        error: str | None = handler(now_ms, args)
        return error

    def handle_command(self, command: Command, now_ms: int) -> list[Outgoing]:
        """Carry out a command and acknowledge it; expired commands are ignored."""
        if now_ms > command.expires_ts:
            return []
        error = self._carry_out(command, now_ms)
        ack = {"cmd_id": command.cmd_id, "ts": now_ms, "seq": self._next_seq(), "ok": error is None}
        if error is not None:
            ack["error"] = error
        return [*self.drain(), Outgoing(Channel.CMD_ACK, ack)]


_ZONES: dict[str, ZoneInfo] = {}


def _zone(name: str) -> ZoneInfo:
    if name not in _ZONES:
        _ZONES[name] = ZoneInfo(name)
    return _ZONES[name]


def next_local_time(ts: int, hhmm: str, timezone: str) -> int:
    """The first moment after ``ts`` when the local clock reads ``hhmm``."""
    zone = _zone(timezone)
    local = datetime.fromtimestamp(ts / 1000, zone)
    hour, minute = (int(x) for x in hhmm.split(":"))
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local:
        candidate += timedelta(days=1)
    return int(candidate.timestamp() * 1000)


class DailyProfile:
    """How activity spreads over the local day: one relative weight per hour.

    ``next_arrival`` draws the next occurrence of a Poisson process whose rate
    follows the profile (by thinning), so busy hours are busy and nights quiet.
    """

    def __init__(self, hourly_weights: Sequence[float]) -> None:
        if len(hourly_weights) != 24 or min(hourly_weights) < 0:
            raise ValueError("a daily profile needs 24 non-negative hourly weights")
        mean = sum(hourly_weights) / 24
        self.factors = [w / mean for w in hourly_weights]
        self.peak = max(self.factors)

    def next_arrival(
        self,
        device: SimulatedDevice,
        after_ms: int,
        per_day: float,
        rng: random.Random,
        shift_ms: int = 0,
    ) -> int:
        """The next event time after ``after_ms`` for a mean of ``per_day`` events a day.

        ``shift_ms`` moves the profile later (or earlier, if negative): an early
        riser's morning peak comes before a late sleeper's.
        """
        peak_rate_per_ms = per_day * self.peak / 86_400_000
        t = after_ms
        while True:
            t += max(1, int(rng.expovariate(peak_rate_per_ms)))
            factor = self.factors[device.local_hour(t - shift_ms)]
            if rng.random() * self.peak <= factor:
                return t


def weighted_choice(rng: random.Random, table: Sequence[tuple[str, float]]) -> str:
    """Pick a name from ``(name, weight)`` pairs."""
    cumulative = list(itertools.accumulate(w for _, w in table))
    return table[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])][0]
