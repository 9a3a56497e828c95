"""How decoded messages become InfluxDB points: the storage mapping of the contract.

Series are kept few: the tags are the device's identity and placement (all
functions of the device, so one series per device) plus, for events, the
event's name and its low-cardinality enum fields (method, scene...) that
dashboards group by. Everything else is a field. The timestamp is the device's
``ts`` in ms, so a redelivered message overwrites its own point.
"""

from __future__ import annotations

from typing import Any

import msgspec

from devices.contract import CmdAck, DeviceRecord, Event, Status, Telemetry
from devices.kind import DeviceKind
from influx.lineprotocol import FieldValue, Point

STATUS_MEASUREMENT = "device_status"
CMD_ACK_MEASUREMENT = "cmd_ack"
SNAPSHOT_MEASUREMENT = "snapshot"


def device_tags(record: DeviceRecord, *, with_kind: bool = False) -> dict[str, str]:
    """Identity and placement tags of every point a device produces."""
    tags = {"community": record.community, "device_id": record.device_id, **record.tags}
    if with_kind:
        tags["kind"] = record.kind
    return tags


def _fields(data: dict[str, Any]) -> dict[str, FieldValue]:
    return {k: v for k, v in data.items() if v is not None}


def telemetry_point(kind: DeviceKind, record: DeviceRecord, message: Telemetry) -> Point:
    """A telemetry message: measurement = the kind, every payload field but ``ts``."""
    data = msgspec.structs.asdict(message)
    ts = data.pop("ts")
    return Point(kind.measurement, device_tags(record), _fields(data), ts)


def event_point(kind: DeviceKind, record: DeviceRecord, event: Event) -> Point:
    """An event: measurement ``<kind>_event``, tagged with its name and enum fields."""
    data = msgspec.structs.asdict(event)
    ts = data.pop("ts")
    tags = device_tags(record)
    tags["event"] = str(event.__struct_config__.tag)
    for name in kind.event_tag_fields:
        value = data.pop(name, None)
        if value is not None:
            tags[name] = str(value)
    return Point(kind.measurement_event, tags, _fields(data), ts)


def status_point(record: DeviceRecord, status: Status, arrival_ms: int) -> Point:
    """Online/offline; a status without ``ts`` (the last will) takes the arrival time."""
    will = status.ts is None and not status.online
    fields: dict[str, FieldValue] = {"online": status.online, "will": will}
    time_ms = status.ts if status.ts is not None else arrival_ms
    return Point(STATUS_MEASUREMENT, device_tags(record, with_kind=True), fields, time_ms)


def cmd_ack_point(record: DeviceRecord, ack: CmdAck) -> Point:
    """A device's answer to a command."""
    fields = _fields({"cmd_id": ack.cmd_id, "ok": ack.ok, "error": ack.error, "seq": ack.seq})
    return Point(CMD_ACK_MEASUREMENT, device_tags(record, with_kind=True), fields, ack.ts)


def snapshot_point(record: DeviceRecord, snapshot_id: str, size: int, arrival_ms: int) -> Point:
    """That a snapshot arrived (the image itself is stored outside InfluxDB)."""
    fields: dict[str, FieldValue] = {"snapshot_id": snapshot_id, "bytes": size}
    return Point(SNAPSHOT_MEASUREMENT, device_tags(record, with_kind=True), fields, arrival_ms)
