"""The device contract: one sub-package per kind, and the one list of kinds.

Adding a kind = adding ``devices/<kind>/`` (schema, simulate, README) that
builds a ``DeviceKind`` named ``KIND``, and listing it here. Every runner
(ingest, simulators, dashboards, alert rules) loops over ``KINDS``.
"""

from devices import door, patrol_robot, streetlight, water_meter
from devices.kind import DeviceKind

KINDS: dict[str, DeviceKind] = {
    kind.name: kind for kind in (door.KIND, streetlight.KIND, water_meter.KIND, patrol_robot.KIND)
}
KIND_NAMES = frozenset(KINDS)

__all__ = ["KINDS", "KIND_NAMES", "DeviceKind"]
