"""Door payloads (CONTRACT.md § door)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from devices.contract import Event, OpaqueId, Telemetry

UnlockMethod = Literal["face", "card", "pin", "app", "remote", "button"]


class DoorTelemetry(Telemetry, kw_only=True):
    """Heartbeat every 60 s."""

    locked: bool
    open: bool
    rssi_dbm: Annotated[int, msgspec.Meta(ge=-150, le=0)]
    temp_c: Annotated[float, msgspec.Meta(ge=-60, le=100)]


class Unlock(Event, tag="unlock", kw_only=True):
    """Door unlocked for someone; ``resident`` is an opaque hash, never a name."""

    method: UnlockMethod
    resident: OpaqueId | None = None


class UnlockFailed(Event, tag="unlock_failed", kw_only=True):
    """Access denied."""

    method: UnlockMethod
    reason: Literal["unknown_face", "expired_card", "wrong_pin"]


class Opened(Event, tag="open"):
    """Door leaf opened."""


class Closed(Event, tag="close"):
    """Door leaf closed."""


class HeldOpen(Event, tag="held_open", kw_only=True):
    """Open longer than the device's own threshold."""

    duration_s: Annotated[int, msgspec.Meta(ge=0, le=30 * 86400)]


class ForcedOpen(Event, tag="forced_open"):
    """Opened without an unlock."""


class Tamper(Event, tag="tamper"):
    """Enclosure or reader tampered with."""


DoorEvent = Unlock | UnlockFailed | Opened | Closed | HeldOpen | ForcedOpen | Tamper


class UnlockArgs(msgspec.Struct, forbid_unknown_fields=True):
    """``unlock`` command arguments."""

    duration_s: Annotated[int, msgspec.Meta(ge=1, le=60)] = 5


class DoorAttributes(msgspec.Struct, forbid_unknown_fields=True):
    """Registry attributes of a door: none beyond its unit."""
