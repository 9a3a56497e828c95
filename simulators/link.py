"""What can go wrong between a simulated device and the broker, as scenarios script it.

A device without faults has no ``Link`` and pays nothing for this. A faulty one
has its outgoing messages passed through ``Link.transmit``, which may hold
them back (offline, hung), stamp them with a wrong clock, garble, repeat or
swap them, the way real devices and their networks misbehave.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from devices.simulation import Outgoing

Garbling = Literal["truncated", "wrong_type", "missing_field"]
GARBLINGS: tuple[Garbling, ...] = ("truncated", "wrong_type", "missing_field")
_ENCODER = msgspec.json.Encoder()
MS_PER_H = 3_600_000


def garble(payload: dict[str, Any], how: Garbling) -> bytes:
    """A broken version of a payload: cut short, a field of the wrong type, or ``ts`` missing."""
    if how == "truncated":
        raw = _ENCODER.encode(payload)
        return raw[: max(1, len(raw) // 2)]
    if how == "wrong_type":
        return _ENCODER.encode({**payload, "seq": str(payload.get("seq", "x"))})
    return _ENCODER.encode({k: v for k, v in payload.items() if k != "ts"})


@dataclass(slots=True)
class Link:
    """A device's faulty path to the broker; every field at its default means no fault."""

    online: bool = True  # False while the connection is down: messages are lost
    hung: bool = False  # the device sends nothing though its connection stays up
    clock_offset_ms: int = 0  # a device clock that is wrong by this much...
    drift_ms_per_h: float = 0.0  # ...and drifts by this much per hour...
    drift_since_ms: int = 0  # ...since this (simulated) time
    garblings: list[Garbling] = field(default_factory=list)  # the next messages, garbled so
    duplicates: int = 0  # the next this many messages are sent twice
    swaps: int = 0  # the next this many pairs of messages go out in swapped order
    held: tuple[Outgoing, bytes] | None = None  # the first of a pair being swapped

    def device_time(self, ts: int) -> int:
        """What the device's own clock reads at simulated time ``ts``."""
        drift = self.drift_ms_per_h * (ts - self.drift_since_ms) / MS_PER_H
        return ts + self.clock_offset_ms + int(drift)

    def transmit(self, out: Outgoing) -> list[tuple[Outgoing, bytes]]:
        """The messages that actually leave the device for ``out``, encoded, in order."""
        if not self.online or self.hung:
            return []
        if out.image is not None:  # a JPEG: no clock of its own to skew, nothing to garble
            return [(out, out.image)]
        payload = out.payload
        if "ts" in payload and (self.clock_offset_ms or self.drift_ms_per_h):
            payload = {**payload, "ts": self.device_time(payload["ts"])}
        if self.garblings and out.channel.value != "status":
            raw = garble(payload, self.garblings.pop(0))
        else:
            raw = _ENCODER.encode(payload)
        sent = [(out, raw)]
        if self.duplicates:
            self.duplicates -= 1
            sent.append((out, raw))
        if self.swaps:
            if self.held is None:
                self.held = (out, raw)
                return sent[1:]  # a duplicate still goes now; the original waits for the next
            sent.append(self.held)
            self.held = None
            self.swaps -= 1
        return sent
