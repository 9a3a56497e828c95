"""Who may publish and read what: Mosquitto's ACL file, rendered from one table of rights.

Devices are covered by ``pattern`` lines with ``%u`` (the username, which is the
device id): a device writes only its own ``telemetry``, ``event``, ``status``,
``cmd_ack`` and ``snapshot/#`` topics and reads only its own ``cmd``. Its
community and kind segments are wildcards: device ids are unique across
communities, and ingest refuses a message whose community or kind does not
match the registered device (the second line of defence). Patterns keep the
file at a few dozen lines whatever the number of devices, so a reload costs
the same for a city as for one community (figures in the README).

Each gridwatch service has its own account with the least rights it needs.
Their names hold a dot, which device ids cannot (``devices.contract``), so a
service can never be mistaken for a device, nor a device registered under a
service's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from devices.contract import TOPIC_ROOT, Channel

DEVICE = f"{TOPIC_ROOT}/+/+/%u"
ANY_DEVICE = f"{TOPIC_ROOT}/+/+/+"
ROBOT = f"{TOPIC_ROOT}/+/patrol_robot/+"
DEVICE_WRITES = ("telemetry", "event", "status", "cmd_ack", "snapshot/#")


class Access(StrEnum):
    """Mosquitto's ACL access words."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Right:
    """``access`` to the topic filter ``topic``."""

    access: Access
    topic: str

    def line(self, keyword: str = "topic") -> str:
        """This right as an ACL file line."""
        return f"{keyword} {self.access} {self.topic}"


def _device_channels(access: Access, base: str) -> tuple[Right, ...]:
    return tuple(Right(access, f"{base}/{channel}") for channel in DEVICE_WRITES)


DEVICE_RIGHTS = (
    *_device_channels(Access.WRITE, DEVICE),
    Right(Access.READ, f"{DEVICE}/{Channel.CMD}"),
)

# The services' accounts: username -> rights. Each list is what the service
# subscribes to and publishes (see the module named in the comment).
SERVICE_RIGHTS: dict[str, tuple[Right, ...]] = {
    # ingest.service: every device channel but cmd, which devices read.
    "gridwatch.ingest": _device_channels(Access.READ, ANY_DEVICE),
    # alerts.service reads the device channels and imagery's camera reports;
    # alerts.channels publishes transitions.
    "gridwatch.alerts": (
        *_device_channels(Access.READ, ANY_DEVICE),
        Right(Access.READ, f"{TOPIC_ROOT}/+/imagery"),
        Right(Access.WRITE, f"{TOPIC_ROOT}/+/alerts"),
    ),
    # api.dispatch sends commands and reads acks; api.live streams alerts and statuses.
    "gridwatch.api": (
        Right(Access.WRITE, f"{ANY_DEVICE}/{Channel.CMD}"),
        Right(Access.READ, f"{ANY_DEVICE}/{Channel.CMD_ACK}"),
        Right(Access.READ, f"{ANY_DEVICE}/{Channel.STATUS}"),
        Right(Access.READ, f"{TOPIC_ROOT}/+/alerts"),
    ),
    # imagery.service reads the robots' snapshots and detections, publishes the
    # checkpoints it reads in frames as the robot's events, and camera faults.
    "gridwatch.imagery": (
        Right(Access.READ, f"{ROBOT}/snapshot/#"),
        Right(Access.READ, f"{ROBOT}/{Channel.EVENT}"),
        Right(Access.WRITE, f"{ROBOT}/{Channel.EVENT}"),
        Right(Access.WRITE, f"{TOPIC_ROOT}/+/imagery"),
    ),
    # Development only (make run, CI): the simulator's gateway connections, which
    # carry many devices each (a city), act for any device.
    "gridwatch.simulator": (
        *_device_channels(Access.WRITE, ANY_DEVICE),
        Right(Access.READ, f"{ANY_DEVICE}/{Channel.CMD}"),
    ),
}
SIMULATOR = "gridwatch.simulator"
PRODUCTION_SERVICES = tuple(name for name in SERVICE_RIGHTS if name != SIMULATOR)


def render_acl(services: list[str]) -> str:
    """The ACL file: the device patterns, then a block per service account in ``services``."""
    lines = [
        "# Written by gridwatch (gridwatch broker sync) from broker/acl.py: do not edit.",
        "# Devices: their own topics only (%u = the username = the device id).",
        *(right.line("pattern") for right in DEVICE_RIGHTS),
    ]
    for name in services:
        lines += ["", f"user {name}", *(right.line() for right in SERVICE_RIGHTS[name])]
    return "\n".join([*lines, ""])
