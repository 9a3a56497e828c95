"""A transport that keeps the messages in memory, for tests and for replaying scenarios in-process.

It stands in for the broker too: dropping a device's connection publishes the
device's last will, as Mosquitto would, so an alert engine fed from here sees
``device.offline`` exactly as it would over MQTT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from devices.contract import Channel, DeviceRecord, device_topic
from gridwatch.clock import Clock
from simulators.fleet import OFFLINE_WILL


@dataclass(frozen=True, slots=True)
class Message:
    """One message as it would reach the broker."""

    topic: str
    payload: bytes
    retain: bool
    received_ms: int  # when the broker got it, by the simulation's clock (a will has no ts)


class MemoryTransport:
    """Records every message (``messages``) or hands each to ``sink`` as it is published."""

    unconfirmed = 0

    def __init__(
        self,
        clock: Clock,
        devices: Iterable[DeviceRecord] = (),
        sink: Callable[[Message], None] | None = None,
    ) -> None:
        self.clock = clock
        self.messages: list[Message] = []
        self._sink = sink or self.messages.append
        self._wills = {
            d.device_id: device_topic(d.community, d.kind, d.device_id, Channel.STATUS)
            for d in devices
        }

    def publish(self, device_id: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Record one message."""
        self._sink(Message(topic, payload, retain, self.clock.now_ms()))

    def poll(self, timeout: float) -> None:
        """Nothing to do: delivery is immediate."""

    def drop(self, device_id: str) -> None:
        """Publish the device's last will, as the broker does when a connection dies."""
        self._sink(Message(self._wills[device_id], OFFLINE_WILL, True, self.clock.now_ms()))

    def restore(self, device_id: str) -> None:
        """Nothing to reconnect in memory."""
