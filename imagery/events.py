"""The camera reports the imagery service publishes, as the alerts service reads them.

A robot's run of bad frames (dark, blurred, obstructed) becomes ``camera_fault``
when it reaches the community's ``camera_fault_after``; the next good frame is
``camera_ok``. Both go to ``sc/{community}/imagery``: three levels, so that the
device subscriptions ``sc/+/+/+/#`` of ingest and alerts do not take them for a
device's message; the alerts service subscribes to ``sc/+/imagery`` and turns
them into the ``robot.camera`` alert. No OpenCV here: the alerts service imports it.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from devices.contract import COMMUNITY_RE, TOPIC_ROOT, SnapshotId, Ts

CAMERA_FAULT: Final = "camera_fault"
CAMERA_OK: Final = "camera_ok"
CAMERA_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/imagery"
# A report names the frames of the run that made it (the alert links to them): at
# most this many, the last ones, however high a community sets camera_fault_after.
MAX_NAMED_FRAMES: Final = 16
Flag = Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{1,16}$")]  # dark, blurred, obstructed


class CameraEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """``camera_fault`` or ``camera_ok`` for one robot, at the time of the frame that decided it."""

    event: Literal["camera_fault", "camera_ok"]
    ts: Ts
    community: Annotated[str, msgspec.Meta(pattern=COMMUNITY_RE.pattern)]
    kind: Literal["patrol_robot"]
    device_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    since_ms: Ts  # the first bad frame of the run
    bad_frames: Annotated[int, msgspec.Meta(ge=0)]
    snapshot_ids: Annotated[list[SnapshotId], msgspec.Meta(max_length=MAX_NAMED_FRAMES)]
    flags: Annotated[list[Flag], msgspec.Meta(max_length=3)] = msgspec.field(default_factory=list)


CAMERA_DECODER: Final = msgspec.json.Decoder(CameraEvent)


def camera_topic(community: str) -> str:
    """Where a community's camera reports go."""
    return f"{TOPIC_ROOT}/{community}/imagery"


def camera_topic_community(topic: str) -> str | None:
    """The community of a camera-report topic, or None if ``topic`` is not one."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != TOPIC_ROOT or parts[2] != "imagery":
        return None
    return parts[1] if COMMUNITY_RE.match(parts[1]) else None
