"""Shared helpers for contract tests: a registered device per kind and a valid message of each."""

from __future__ import annotations

import random
from typing import Any

import msgspec

from devices import KINDS
from devices.contract import Community, DeviceRecord
from devices.simulation import Outgoing

COMMUNITY = Community(id="zjxc", name="张家新村", lat=36.8131, lon=118.0549)
NOW_MS = 1_795_000_000_000

ATTRIBUTES: dict[str, dict[str, Any]] = {
    "door": {"unit_households": 12},
    "streetlight": {"circuit": "a", "rated_power_w": 80.0},
    "water_meter": {},
    "patrol_robot": {
        "dock_lat": 36.8131,
        "dock_lon": 118.0549,
        "routes": [
            {
                "id": "night-a",
                "start": "22:00",
                "end": "05:30",
                "checkpoints": [
                    {"id": f"cp-{i:02d}", "lat": 36.8131 + i * 0.0003, "lon": 118.0549}
                    for i in range(1, 6)
                ],
            }
        ],
    },
}
TAGS = {
    "door": {"building": "3", "unit": "2"},
    "streetlight": {"circuit": "a"},
    "water_meter": {"building": "3", "unit": "2", "room": "501"},
    "patrol_robot": {},
}


def record(kind: str, device_id: str | None = None) -> DeviceRecord:
    """A registered device of ``kind`` in the test community."""
    return DeviceRecord(
        device_id=device_id or f"zjxc-{kind}-1",
        community=COMMUNITY.id,
        kind=kind,
        place="3号楼2单元",
        lat=36.8131,
        lon=118.0549,
        tags=TAGS[kind],
        attributes=ATTRIBUTES[kind],
    )


def sample_payloads(
    kind: str, hours: float = 24, start_ms: int = NOW_MS
) -> list[tuple[str, bytes]]:
    """(channel, payload) pairs a simulated device of ``kind`` publishes over ``hours``.

    A snapshot's channel carries its id (``snapshot/{snapshot_id}``) and its payload
    is the JPEG, as on the wire.
    """
    sim = KINDS[kind].simulate(record(kind), COMMUNITY, random.Random(7), start_ms)
    out: list[tuple[str, bytes]] = []
    end = start_ms + int(hours * 3_600_000)
    while sim.next_due_ms() <= end:
        for message in sim.run_due(sim.next_due_ms()):
            out.append(_on_the_wire(message))
    return out


def _on_the_wire(message: Outgoing) -> tuple[str, bytes]:
    if message.image is not None:
        return f"{message.channel.value}/{message.payload['snapshot_id']}", message.image
    return message.channel.value, msgspec.json.encode(message.payload)
