"""The parts of the MQTT device contract (shared/CONTRACT.md, v1) common to every kind.

Topics are ``sc/{community}/{kind}/{device_id}/{channel}``; payloads are JSON
objects decoded with msgspec into the typed structs below (unknown fields are
ignored, missing or mistyped ones are refused with a reason that names the field).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

import msgspec

TOPIC_ROOT = "sc"
COMMUNITY_RE = re.compile(r"^[a-z0-9-]{2,32}$")
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SNAPSHOT_ID_RE = DEVICE_ID_RE

# Bounds on every number keep absurd values (1e400, 2**80) out of storage: msgspec
# refuses them with "out of range" and the field's JSON path.
EPOCH_MS_MAX = 4_102_444_800_000  # 2100-01-01: a ts beyond is garbage, not a device clock
Ts = Annotated[int, msgspec.Meta(ge=0, le=EPOCH_MS_MAX)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Pct = Annotated[int, msgspec.Meta(ge=0, le=100)]
Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]
SnapshotId = Annotated[str, msgspec.Meta(pattern=SNAPSHOT_ID_RE.pattern)]
OpaqueId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
ShortText = Annotated[str, msgspec.Meta(max_length=256)]


class Channel(StrEnum):
    """The last topic segment(s): what a message is."""

    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"
    CMD = "cmd"
    CMD_ACK = "cmd_ack"
    SNAPSHOT = "snapshot"


DEVICE_CHANNELS = frozenset(
    {Channel.TELEMETRY, Channel.EVENT, Channel.STATUS, Channel.CMD_ACK, Channel.SNAPSHOT}
)


class TopicError(ValueError):
    """A topic that is not ``sc/{community}/{kind}/{device_id}/{channel}``."""


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed device topic."""

    community: str
    kind: str
    device_id: str
    channel: Channel
    snapshot_id: str | None = None

    def __str__(self) -> str:
        return device_topic(
            self.community, self.kind, self.device_id, self.channel, self.snapshot_id
        )


def device_topic(
    community: str, kind: str, device_id: str, channel: Channel, snapshot_id: str | None = None
) -> str:
    """Build a device topic; the inverse of ``parse_topic``."""
    base = f"{TOPIC_ROOT}/{community}/{kind}/{device_id}/{channel.value}"
    return f"{base}/{snapshot_id}" if channel is Channel.SNAPSHOT else base


def parse_topic(topic: str, known_kinds: frozenset[str] | None = None) -> Topic:
    """Split and check a device topic; raise ``TopicError`` saying what is wrong."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != TOPIC_ROOT:
        raise TopicError("expected sc/{community}/{kind}/{device_id}/{channel}")
    _, community, kind, device_id, *rest = parts
    if not COMMUNITY_RE.match(community):
        raise TopicError("community must match [a-z0-9-]{2,32}")
    if known_kinds is not None and kind not in known_kinds:
        raise TopicError(f"unknown device kind {kind[:40]!r}")
    if not DEVICE_ID_RE.match(device_id):
        raise TopicError("device_id must match [A-Za-z0-9_-]{1,64}")
    try:
        channel = Channel(rest[0])
    except ValueError:
        raise TopicError(f"unknown channel {rest[0][:40]!r}") from None
    if channel is Channel.SNAPSHOT:
        if len(rest) != 2 or not SNAPSHOT_ID_RE.match(rest[1]):
            raise TopicError("expected .../snapshot/{snapshot_id}")
        return Topic(community, kind, device_id, channel, rest[1])
    if len(rest) != 1:
        raise TopicError("extra levels after the channel")
    return Topic(community, kind, device_id, channel)


# --- payloads common to all kinds -------------------------------------------------


class Status(msgspec.Struct, forbid_unknown_fields=False):
    """Retained ``status``; the last will is ``{"online": false}`` without ts."""

    online: bool
    ts: Ts | None = None


class CmdAck(msgspec.Struct):
    """A device's answer to a command."""

    cmd_id: OpaqueId
    ts: Ts
    seq: Seq
    ok: bool
    error: ShortText | None = None


class Command(msgspec.Struct):
    """A command sent to a device on its ``cmd`` topic (QoS 1)."""

    cmd_id: OpaqueId
    ts: Ts
    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{1,32}$")]
    expires_ts: Ts
    args: dict[str, Any] = msgspec.field(default_factory=dict)


class Telemetry(msgspec.Struct):
    """Base of every kind's telemetry: device time and per-device sequence."""

    ts: Ts
    seq: Seq


class Event(msgspec.Struct, tag_field="event"):
    """Base of every kind's events; subclasses set ``tag`` to the event name."""

    ts: Ts
    seq: Seq


# --- what the rest of gridwatch knows about a registered device --------------------


@dataclass(frozen=True, slots=True)
class Community:
    """A community as the runners need it (the registry holds the rest)."""

    id: str
    name: str
    lat: float
    lon: float
    timezone: str = "Asia/Shanghai"


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device: who it is, where it is, and its kind's attributes.

    ``tags`` are the placement tags written with every point (functions of the
    device, so they add no series); ``attributes`` are the kind's registry
    fields (rated power, circuit, route...) as validated at import.
    """

    device_id: str
    community: str
    kind: str
    place: str
    lat: float | None = None
    lon: float | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
