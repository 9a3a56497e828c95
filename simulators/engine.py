"""The simulation loop: every device of one or more communities, in event-time order.

Devices are ordered in a heap by their next due time; the loop runs the
earliest, publishes what it produced, and waits (on the simulated clock) for
the next. Messages carry event time (``ts``) from the clock, so the same seed
and start give the same stream at any speed.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from devices import KINDS
from devices.contract import Channel, Command, Community, DeviceRecord, device_topic
from devices.simulation import Outgoing, SimulatedDevice
from gridwatch.clock import SimulatedClock, WallClock

log = logging.getLogger("gridwatch.simulate")

_COMMAND_DECODER = msgspec.json.Decoder(Command)
_ENCODER = msgspec.json.Encoder()
# Keep at most this many messages waiting for the broker's ack before running more devices.
MAX_UNCONFIRMED = 20_000
# While running behind (replay), read acks and commands every this many devices run.
POLL_EVERY = 64


class Transport(Protocol):
    """Where simulated messages go: the MQTT fleet, or a list in tests."""

    def publish(self, device_id: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Send one message from a device."""
        ...

    def poll(self, timeout: float) -> None:
        """Do pending I/O, waiting at most ``timeout`` seconds."""
        ...

    @property
    def unconfirmed(self) -> int:
        """Messages sent but not yet confirmed by the broker."""
        ...


@dataclass
class Report:
    """What a run published, by kind and channel."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    started_ms: int = 0
    reached_ms: int = 0

    def by_kind(self, channel: Channel | None = None) -> Counter[str]:
        """Messages per kind, of one channel or all."""
        totals: Counter[str] = Counter()
        for (kind, ch), n in self.counts.items():
            if channel is None or ch == channel.value:
                totals[kind] += n
        return totals

    @property
    def total(self) -> int:
        """All messages published."""
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class _Device:
    record: DeviceRecord
    sim: SimulatedDevice


class Simulation:
    """Runs the devices of some communities on a simulated clock."""

    def __init__(
        self,
        communities: Iterable[Community],
        devices: Iterable[DeviceRecord],
        *,
        clock: SimulatedClock,
        seed: int,
        transport: Transport,
    ) -> None:
        by_id = {c.id: c for c in communities}
        self.clock = clock
        self.transport = transport
        self.report = Report(started_ms=clock.now_ms(), reached_ms=clock.now_ms())
        self._devices: dict[str, _Device] = {}
        for record in sorted(devices, key=lambda r: r.device_id):
            rng = random.Random(f"{seed}:{record.device_id}")
            sim = KINDS[record.kind].simulate(record, by_id[record.community], rng, clock.now_ms())
            self._devices[record.device_id] = _Device(record, sim)
        self._heap = [(d.sim.next_due_ms(), device_id) for device_id, d in self._devices.items()]
        heapq.heapify(self._heap)
        self._commands: list[tuple[str, bytes]] = []
        self._since_poll = 0

    @property
    def device_ids(self) -> list[str]:
        """Every simulated device id, sorted."""
        return list(self._devices)

    def _send(self, device: _Device, out: Outgoing) -> None:
        r = device.record
        topic = device_topic(r.community, r.kind, r.device_id, out.channel)
        self.transport.publish(r.device_id, topic, _ENCODER.encode(out.payload), retain=out.retain)
        self.report.counts[(r.kind, out.channel.value)] += 1

    def announce(self, online: bool) -> None:
        """Every device publishes its retained status (online at start, offline at a clean stop)."""
        now = self.clock.now_ms()
        for device in self._devices.values():
            self._send(device, device.sim.status(now, online))

    def queue_command(self, device_id: str, payload: bytes) -> None:
        """Called by the transport when a device receives a command; run in the loop."""
        self._commands.append((device_id, payload))

    def _run_commands(self) -> None:
        commands, self._commands = self._commands, []
        for device_id, payload in commands:
            device = self._devices.get(device_id)
            try:
                command = _COMMAND_DECODER.decode(payload)
            except msgspec.DecodeError as exc:
                log.warning("%s ignored a malformed command: %s", device_id, exc)
                continue
            if device is None:
                continue
            for out in device.sim.handle_command(command, self.clock.now_ms()):
                self._send(device, out)
            self._reschedule(device_id)

    def _reschedule(self, device_id: str) -> None:
        # A command may have added earlier work to the device's agenda.
        heapq.heappush(self._heap, (self._devices[device_id].sim.next_due_ms(), device_id))

    def run(
        self,
        until_ms: int | None,
        stop: threading.Event,
        progress: Callable[[Report], None] | None = None,
    ) -> Report:
        """Run devices until simulated time reaches ``until_ms`` (None: until ``stop``)."""
        last_progress = time.monotonic()
        while not stop.is_set() and self._heap:
            due, device_id = self._heap[0]
            if until_ms is not None and due > until_ms:
                break
            if not self._wait_for(due, stop):
                break
            heapq.heappop(self._heap)
            device = self._devices[device_id]
            if device.sim.next_due_ms() != due:  # a stale entry left by _reschedule
                continue
            for out in device.sim.run_due(due):
                self._send(device, out)
            heapq.heappush(self._heap, (device.sim.next_due_ms(), device_id))
            self.report.reached_ms = due
            if self._commands:
                self._run_commands()
            if progress is not None and time.monotonic() - last_progress >= 1.0:
                last_progress = time.monotonic()
                progress(self.report)
        if until_ms is not None and not stop.is_set():
            self.clock.sleep_until(until_ms, stop)
            self.report.reached_ms = until_ms
        return self.report

    def follow_live(
        self, stop: threading.Event, progress: Callable[[Report], None] | None = None
    ) -> Report:
        """After a replay, carry on in real time from the wall clock's now until ``stop``."""
        self.clock.rebase(1.0, at_ms=WallClock().now_ms())
        return self.run(None, stop, progress)

    def _wait_for(self, due_ms: int, stop: threading.Event) -> bool:
        """Do network I/O until the clock reaches ``due_ms``, without letting acks pile up."""
        while self.transport.unconfirmed > MAX_UNCONFIRMED:
            self.transport.poll(0.01)
        while True:
            if stop.is_set():
                return False
            if self._commands:
                self._run_commands()
            behind_ms = due_ms - self.clock.now_ms()
            if behind_ms <= 0 or self.clock.speed == 0:
                self.clock.sleep_until(due_ms)
                self._since_poll += 1
                if self._since_poll >= POLL_EVERY:  # I/O in bursts: a syscall per message is slow
                    self._since_poll = 0
                    self.transport.poll(0)
                return True
            self.transport.poll(min(0.2, behind_ms / self.clock.speed / 1000))
