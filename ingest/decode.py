"""Turn one MQTT message into a point, or into a rejection that says why.

Pure and fast: no I/O, no clock of its own. Every check of the contract
happens here, in the order that is cheapest first: topic, size, registry,
JSON and schema, timestamp bounds, line-protocol encodability.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import msgspec

from devices import KIND_NAMES, KINDS
from devices.contract import (
    Channel,
    CmdAck,
    DeviceRecord,
    Event,
    Status,
    Telemetry,
    TopicError,
    parse_topic,
)
from devices.kind import CMD_ACK_DECODER, STATUS_DECODER
from devices.points import (
    cmd_ack_point,
    event_point,
    snapshot_point,
    status_point,
    telemetry_point,
)
from influx.lineprotocol import Point, UnencodableError, encode_point


class Reason(StrEnum):
    """Why a message was rejected; the label of the rejection counters."""

    BAD_TOPIC = "bad_topic"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_MISMATCH = "device_mismatch"
    TOO_LARGE = "too_large"
    BAD_JSON = "bad_json"
    SCHEMA = "schema"
    TS_FUTURE = "ts_future"
    TS_TOO_OLD = "ts_too_old"
    UNENCODABLE = "unencodable"
    INFLUX_REJECTED = "influx_rejected"


@dataclass(frozen=True, slots=True)
class Limits:
    """Contract limits (sizes in bytes, time bounds in ms)."""

    max_payload_bytes: int = 16 * 1024
    max_snapshot_bytes: int = 2 * 1024 * 1024
    ts_max_future_ms: int = 10 * 60_000
    ts_max_age_ms: int = 7 * 86_400_000


@dataclass(frozen=True, slots=True)
class Accepted:
    """A message that passed: its point and the line to write."""

    kind: str
    point: Point
    line: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message refused, with a reason and a human-readable detail."""

    reason: Reason
    detail: str
    kind: str = "unknown"


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message on a topic ingest subscribes to but does not store (commands we sent)."""

    channel: str


Outcome = Accepted | Rejected | Ignored


def decode_message(
    topic: str,
    payload: bytes,
    *,
    devices: Mapping[str, DeviceRecord],
    now_ms: int,
    limits: Limits,
) -> Outcome:
    """Check one message against the contract and the registry."""
    try:
        parsed = parse_topic(topic, KIND_NAMES)
    except TopicError as exc:
        return Rejected(Reason.BAD_TOPIC, str(exc))
    kind_name = parsed.kind
    if parsed.channel is Channel.CMD:
        return Ignored(parsed.channel.value)
    limit = (
        limits.max_snapshot_bytes
        if parsed.channel is Channel.SNAPSHOT
        else limits.max_payload_bytes
    )
    if len(payload) > limit:
        return Rejected(Reason.TOO_LARGE, f"{len(payload)} bytes > {limit}", kind_name)
    record = devices.get(parsed.device_id)
    if record is None:
        return Rejected(Reason.UNKNOWN_DEVICE, f"{parsed.device_id} is not registered", kind_name)
    if record.community != parsed.community or record.kind != kind_name:
        detail = f"{parsed.device_id} is registered as {record.community}/{record.kind}"
        return Rejected(Reason.DEVICE_MISMATCH, detail, kind_name)
    if parsed.channel is Channel.SNAPSHOT:
        if not KINDS[kind_name].sends_snapshots:
            return Rejected(Reason.BAD_TOPIC, f"a {kind_name} sends no snapshots", kind_name)
        point = snapshot_point(record, parsed.snapshot_id or "", len(payload), now_ms)
        return _accept(kind_name, point)
    try:
        point = _to_point(parsed.channel, record, payload, now_ms)
    except msgspec.ValidationError as exc:
        return Rejected(Reason.SCHEMA, str(exc), kind_name)
    except msgspec.DecodeError as exc:
        return Rejected(Reason.BAD_JSON, str(exc), kind_name)
    too_early = now_ms - limits.ts_max_age_ms
    if point.time_ms > now_ms + limits.ts_max_future_ms:
        return Rejected(Reason.TS_FUTURE, f"ts {point.time_ms} is ahead of {now_ms}", kind_name)
    if point.time_ms < too_early:
        return Rejected(Reason.TS_TOO_OLD, f"ts {point.time_ms} is before {too_early}", kind_name)
    return _accept(kind_name, point)


def _to_point(channel: Channel, record: DeviceRecord, payload: bytes, now_ms: int) -> Point:
    kind = KINDS[record.kind]
    if channel is Channel.TELEMETRY:
        telemetry: Telemetry = kind.telemetry_decoder.decode(payload)
        return telemetry_point(kind, record, telemetry)
    if channel is Channel.EVENT:
        event: Event = kind.event_decoder.decode(payload)
        return event_point(kind, record, event)
    if channel is Channel.STATUS:
        status: Status = STATUS_DECODER.decode(payload)
        return status_point(record, status, now_ms)
    ack: CmdAck = CMD_ACK_DECODER.decode(payload)
    return cmd_ack_point(record, ack)


def _accept(kind: str, point: Point) -> Outcome:
    try:
        line = encode_point(point)
    except UnencodableError as exc:
        return Rejected(Reason.UNENCODABLE, str(exc), kind)
    return Accepted(kind, point, line)
