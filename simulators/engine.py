"""The simulation loop: every device of one or more communities, in event-time order.

Devices are ordered in a heap by their next due time; the loop runs the
earliest, publishes what it produced, and waits (on the simulated clock) for
the next. Scenario actions (faults) sit on a timeline of their own, merged
into the same order. Messages carry event time (``ts``) from the clock, so the
same seed, start and scenario give the same stream at any speed.
"""

from __future__ import annotations

import heapq
import itertools
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
from simulators.link import Link

log = logging.getLogger("gridwatch.simulate")

_COMMAND_DECODER = msgspec.json.Decoder(Command)
_ENCODER = msgspec.json.Encoder()
# Keep at most this many messages waiting for the broker's ack before running more devices.
MAX_UNCONFIRMED = 50_000
# While running behind (replay), do network I/O every this many steps: in bursts, not per message.
POLL_EVERY = 4096


class Transport(Protocol):
    """Where simulated messages go: the MQTT fleet, or memory in tests."""

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

    def drop(self, device_id: str) -> None:
        """Lose the device's connection uncleanly, so that the broker publishes its last will."""
        ...

    def restore(self, device_id: str) -> None:
        """Reconnect a dropped device."""
        ...


@dataclass
class Report:
    """What a run published, by kind and channel."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    devices: Counter[str] = field(default_factory=Counter)  # simulated devices per kind
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


@dataclass(slots=True)
class DeviceHandle:
    """One simulated device as the loop and the scenarios see it."""

    record: DeviceRecord
    sim: SimulatedDevice
    topics: dict[Channel, str]
    counted_as: dict[Channel, tuple[str, str]]  # the report's key for each channel
    link: Link | None = None  # set once a scenario touches the device's connection

    def impair(self) -> Link:
        """The device's link, created on first use."""
        if self.link is None:
            self.link = Link()
        return self.link


Action = Callable[[int], None]


def _topic(device: DeviceHandle, out: Outgoing) -> str:
    """Where ``out`` goes: the device's topic of its channel, or ``snapshot/{snapshot_id}``."""
    if out.channel is not Channel.SNAPSHOT:
        return device.topics[out.channel]
    record = device.record
    snapshot_id = str(out.payload["snapshot_id"])
    return device_topic(record.community, record.kind, record.device_id, out.channel, snapshot_id)


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
        self.communities = {c.id: c for c in communities}
        self.clock = clock
        self.transport = transport
        self.report = Report(started_ms=clock.now_ms(), reached_ms=clock.now_ms())
        self._devices: dict[str, DeviceHandle] = {}
        for record in sorted(devices, key=lambda r: r.device_id):
            rng = random.Random(f"{seed}:{record.device_id}")
            community = self.communities[record.community]
            sim = KINDS[record.kind].simulate(record, community, rng, clock.now_ms())
            channels = (Channel.TELEMETRY, Channel.EVENT, Channel.STATUS, Channel.CMD_ACK)
            topics = {
                ch: device_topic(record.community, record.kind, record.device_id, ch)
                for ch in channels
            }
            counted_as = {ch: (record.kind, ch.value) for ch in (*channels, Channel.SNAPSHOT)}
            self._devices[record.device_id] = DeviceHandle(record, sim, topics, counted_as)
            self.report.devices[record.kind] += 1
        self._heap = [(d.sim.next_due_ms(), device_id) for device_id, d in self._devices.items()]
        heapq.heapify(self._heap)
        self._timeline: list[tuple[int, int, str, Action]] = []
        self._order = itertools.count()
        self._commands: list[tuple[str, bytes]] = []
        self._since_poll = 0

    @property
    def device_ids(self) -> list[str]:
        """Every simulated device id, sorted."""
        return list(self._devices)

    def device(self, device_id: str) -> DeviceHandle:
        """One device (KeyError if it is not simulated here)."""
        return self._devices[device_id]

    @property
    def devices(self) -> list[DeviceHandle]:
        """Every simulated device, by id."""
        return list(self._devices.values())

    # --- publishing -------------------------------------------------------------

    def _send(self, device: DeviceHandle, out: Outgoing) -> None:
        device_id = device.record.device_id
        topic = _topic(device, out)
        if device.link is None:
            raw = _ENCODER.encode(out.payload) if out.image is None else out.image
            self.transport.publish(device_id, topic, raw, retain=out.retain)
            self.report.counts[device.counted_as[out.channel]] += 1
            return
        for message, raw in device.link.transmit(out):
            self.transport.publish(device_id, topic, raw, retain=message.retain)
            self.report.counts[device.counted_as[message.channel]] += 1

    def _flush_device(self, device: DeviceHandle) -> None:
        for out in device.sim.drain():
            self._send(device, out)
        # Whatever happened may have added earlier work to the device's agenda.
        heapq.heappush(self._heap, (device.sim.next_due_ms(), device.record.device_id))

    def announce(self, online: bool) -> None:
        """Every device publishes its retained status (online at start, offline at a clean stop)."""
        now = self.clock.now_ms()
        for device in self._devices.values():
            self._send(device, device.sim.status(now, online))

    # --- scenario actions --------------------------------------------------------

    def schedule(self, due_ms: int, device_id: str, action: Action) -> None:
        """Run ``action(due_ms)`` at simulated time ``due_ms``, then send the device's output."""
        if device_id not in self._devices:
            raise KeyError(f"{device_id} is not simulated here")
        heapq.heappush(self._timeline, (due_ms, next(self._order), device_id, action))

    def go_offline(self, device_id: str) -> None:
        """The device's connection dies without DISCONNECT: the broker publishes its will."""
        link = self._devices[device_id].impair()
        if link.online:
            link.online = False
            self.transport.drop(device_id)

    def come_online(self, device_id: str, ts: int) -> None:
        """The device reconnects and says so (retained status with its ``ts``)."""
        device = self._devices[device_id]
        link = device.impair()
        if not link.online:
            link.online = True
            self.transport.restore(device_id)
            self._send(device, device.sim.status(ts, online=True))

    # --- commands -----------------------------------------------------------------

    def queue_command(self, device_id: str, payload: bytes) -> None:
        """Called by the transport when a device receives a command; run in the loop."""
        self._commands.append((device_id, payload))

    def _run_commands(self) -> None:
        commands, self._commands = self._commands, []
        for device_id, payload in commands:
            device = self._devices.get(device_id)
            if device is None:
                continue
            if device.link is not None and not (device.link.online and not device.link.hung):
                continue  # an offline or hung device does not hear its commands
            try:
                command = _COMMAND_DECODER.decode(payload)
            except msgspec.DecodeError as exc:
                log.warning("%s ignored a malformed command: %s", device_id, exc)
                continue
            for out in device.sim.handle_command(command, self.clock.now_ms()):
                self._send(device, out)
            self._flush_device(device)

    # --- the loop -------------------------------------------------------------------

    def _next_due(self) -> tuple[int, bool] | None:
        """The next moment something happens, and whether it is a scenario action."""
        heap, timeline = self._heap, self._timeline
        if timeline and (not heap or timeline[0][0] <= heap[0][0]):
            return timeline[0][0], True
        if heap:
            return heap[0][0], False
        return None

    def _step(self, due: int, is_action: bool) -> None:
        if is_action:
            _, _, device_id, action = heapq.heappop(self._timeline)
            device = self._devices[device_id]
            action(due)
            self._flush_device(device)
            return
        _, device_id = heapq.heappop(self._heap)
        device = self._devices[device_id]
        if device.sim.next_due_ms() != due:  # a stale entry left by _flush_device
            return
        for out in device.sim.run_due(due):
            self._send(device, out)
        heapq.heappush(self._heap, (device.sim.next_due_ms(), device_id))

    def run(
        self,
        until_ms: int | None,
        stop: threading.Event,
        progress: Callable[[Report], None] | None = None,
    ) -> Report:
        """Run devices until simulated time reaches ``until_ms`` (None: until ``stop``)."""
        last_progress = time.monotonic()
        while not stop.is_set():
            nxt = self._next_due()
            if nxt is None or (until_ms is not None and nxt[0] > until_ms):
                break
            due, is_action = nxt
            if not self._wait_for(due, stop):
                if stop.is_set():
                    break
                continue  # a command brought work forward: pick the earliest again
            self._step(due, is_action)
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
        """Do network I/O until the clock reaches ``due_ms``; False if stopped or overtaken.

        Overtaken: a command received meanwhile scheduled something earlier.
        """
        self._since_poll += 1
        if self._since_poll >= POLL_EVERY:  # running behind: I/O in bursts, not per message
            self._since_poll = 0
            self.transport.poll(0)
            while self.transport.unconfirmed > MAX_UNCONFIRMED and not stop.is_set():
                self.transport.poll(0.01)
        clock = self.clock
        while True:
            if stop.is_set():
                return False
            if self._commands:
                self._run_commands()
                nxt = self._next_due()
                if nxt is not None and nxt[0] < due_ms:
                    return False
            if clock.speed == 0 or (behind_ms := due_ms - clock.now_ms()) <= 0:
                clock.sleep_until(due_ms)
                return True
            self._since_poll = 0
            self.transport.poll(min(0.2, behind_ms / clock.speed / 1000))
