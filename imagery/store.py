"""Imagery's SQL side: snapshot rows, dead letters, camera state, retention, and lookups.

Every function works inside the caller's session and transaction. The
lookups at the end (``get_snapshot`` … ``snapshots_for_alert``) are what the
API uses to find a snapshot's files and to decide who may see them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alerts.models import Alert
from alerts.site import DAY_MS, distance_m
from devices.contract import SNAPSHOT_ID_RE, DeviceRecord
from devices.patrol_robot.rules import SceneParams
from devices.patrol_robot.schema import Detection
from imagery.files import Variant
from imagery.models import (
    EVIDENCE_PENDING,
    EVIDENCE_PUBLISHED,
    RobotCamera,
    Snapshot,
    SnapshotRejection,
)

if TYPE_CHECKING:  # not at run time: the alerts service imports this module, and needs no OpenCV
    from imagery.checkpoints import CheckpointCode
    from imagery.pipeline import Processed

SCENE_RULE = "robot.scene"
SCENE_RADIUS_M = SceneParams().radius_m
# An alert that names frames (its facts' snapshot_id/snapshot_ids) opens at the
# last of them or soon after: frames are looked for at most this long before it.
NAMED_WITHIN_MS = DAY_MS
HASH_COLUMNS = {
    Variant.ORIGINAL: Snapshot.original_sha256,
    Variant.PRIVACY: Snapshot.privacy_sha256,
    Variant.THUMBNAIL: Snapshot.thumbnail_sha256,
}


@dataclass(frozen=True, slots=True)
class StoredFiles:
    """The SHA-256 of each file written for one snapshot."""

    original: str
    privacy: str
    thumbnail: str


@dataclass(frozen=True, slots=True)
class CameraChange:
    """A robot's camera became faulty (``fault`` True) or works again."""

    device_id: str
    community: str
    fault: bool
    at_ms: int
    since_ms: int
    bad_frames: int
    snapshot_ids: tuple[str, ...]


# --- writing ----------------------------------------------------------------------------


def snapshot_row(
    session: Session, community: str, device_id: str, snapshot_id: str, at_ms: int
) -> Snapshot:
    """The row of this robot's snapshot, created if it is the first we hear of it."""
    query = select(Snapshot).where(
        Snapshot.device_id == device_id, Snapshot.snapshot_id == snapshot_id
    )
    row = session.scalar(query)
    if row is not None:
        return row
    row = Snapshot(
        community_id=community,
        device_id=device_id,
        snapshot_id=snapshot_id,
        at_ms=at_ms,
        qr_codes=[],
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # created meanwhile by another replica, or by the alerts service
        existing = session.scalar(query)
        if existing is None:
            raise
        return existing
    return row


def record_detection(session: Session, device: DeviceRecord, detection: Detection) -> Snapshot:
    """Note the detection behind a snapshot: its time, place, scene and confidence."""
    row = snapshot_row(
        session, device.community, device.device_id, detection.snapshot_id or "", detection.ts
    )
    row.detection_ts = detection.ts
    row.at_ms = detection.ts
    row.scene = detection.scene
    row.confidence = detection.confidence
    row.lat, row.lon = detection.lat, detection.lon
    return row


def record_image(
    session: Session,
    device: DeviceRecord,
    snapshot_id: str,
    processed: Processed,
    files: StoredFiles,
    *,
    original_bytes: int,
    received_ms: int,
    checkpoint: CheckpointCode | None,
) -> tuple[Snapshot, list[tuple[Variant, str]]]:
    """Store what the pipeline found; returns the row and files it no longer refers to.

    Files are replaced only when a robot sends different bytes under a
    snapshot id it used before; a redelivery stores the same hashes.
    """
    row = snapshot_row(session, device.community, device.device_id, snapshot_id, received_ms)
    replaced = [
        (variant, old)
        for variant, old, new in (
            (Variant.ORIGINAL, row.original_sha256, files.original),
            (Variant.PRIVACY, row.privacy_sha256, files.privacy),
            (Variant.THUMBNAIL, row.thumbnail_sha256, files.thumbnail),
        )
        if old is not None and old != new
    ]
    quality = processed.quality
    row.received_ms = received_ms
    if row.detection_ts is None:
        row.at_ms = received_ms
    row.width, row.height = processed.declared.width, processed.declared.height
    row.original_sha256, row.original_bytes = files.original, original_bytes
    row.privacy_sha256, row.privacy_bytes = files.privacy, len(processed.privacy.data)
    row.privacy_width, row.privacy_height = processed.privacy.width, processed.privacy.height
    row.thumbnail_sha256, row.thumbnail_bytes = files.thumbnail, len(processed.thumbnail.data)
    row.thumbnail_width, row.thumbnail_height = (
        processed.thumbnail.width,
        processed.thumbnail.height,
    )
    row.faces, row.people = processed.faces, processed.people
    row.brightness, row.sharpness = quality.brightness, quality.sharpness
    row.entropy, row.uniform = quality.entropy, quality.uniform
    row.dark, row.blurred, row.obstructed = quality.dark, quality.blurred, quality.obstructed
    row.qr_codes = [text[:200] for text in processed.qr_texts[:8]]
    if checkpoint is not None and row.evidence != EVIDENCE_PUBLISHED:
        row.checkpoint_route, row.checkpoint_id = checkpoint.route, checkpoint.checkpoint_id
        row.evidence = EVIDENCE_PENDING
    session.flush()
    return row, unreferenced(session, replaced)


def record_rejection(session: Session, rejection: SnapshotRejection) -> None:
    """Keep a dead letter."""
    session.add(rejection)


def update_camera(
    session: Session, row: Snapshot, *, bad: bool, fault_after: int
) -> CameraChange | None:
    """Count the robot's run of bad frames; a change when it reaches ``fault_after`` or ends."""
    camera = session.get(RobotCamera, row.device_id)
    if camera is None:
        camera = RobotCamera(
            device_id=row.device_id,
            community_id=row.community_id,
            bad_streak=0,
            bad_snapshots=[],
            fault=False,
            last_ms=row.at_ms,
        )
        session.add(camera)
    camera.last_ms = max(camera.last_ms, row.at_ms)
    if bad:
        if row.snapshot_id in camera.bad_snapshots:
            return None  # a redelivery of a frame already counted
        camera.bad_streak += 1
        camera.bad_snapshots = [*camera.bad_snapshots, row.snapshot_id][-fault_after:]
        if camera.fault or camera.bad_streak < fault_after:
            return None
        camera.fault = True
        camera.fault_since_ms = row.at_ms
        return _change(camera, row.at_ms)
    camera.bad_streak = 0
    camera.bad_snapshots = []
    if not camera.fault:
        return None
    camera.fault = False
    return _change(camera, row.at_ms)


def _change(camera: RobotCamera, at_ms: int) -> CameraChange:
    return CameraChange(
        camera.device_id,
        camera.community_id,
        camera.fault,
        at_ms,
        camera.fault_since_ms or at_ms,
        camera.bad_streak,
        tuple(camera.bad_snapshots),
    )


def evidence_due(session: Session, limit: int = 100) -> Sequence[Snapshot]:
    """Checkpoints read in frames whose detection time is known, not yet published."""
    return session.scalars(
        select(Snapshot)
        .where(Snapshot.evidence == EVIDENCE_PENDING, Snapshot.detection_ts.is_not(None))
        .order_by(Snapshot.id)
        .limit(limit)
    ).all()


def mark_published(session: Session, rows: Iterable[Snapshot]) -> None:
    """The checkpoint evidence of these rows is with the broker."""
    for row in rows:
        row.evidence = EVIDENCE_PUBLISHED


# --- retention --------------------------------------------------------------------------


def expire(
    session: Session, community: str, before_ms: int, limit: int = 1000
) -> tuple[int, list[tuple[Variant, str]]]:
    """Delete up to ``limit`` snapshots (and dead letters) older than ``before_ms``.

    Returns how many snapshot rows went and the files nobody refers to any more.
    """
    rows = session.scalars(
        select(Snapshot)
        .where(Snapshot.community_id == community, Snapshot.at_ms < before_ms)
        .order_by(Snapshot.at_ms)
        .limit(limit)
    ).all()
    hashes = [
        (variant, sha)
        for row in rows
        for variant, sha in (
            (Variant.ORIGINAL, row.original_sha256),
            (Variant.PRIVACY, row.privacy_sha256),
            (Variant.THUMBNAIL, row.thumbnail_sha256),
        )
        if sha is not None
    ]
    if rows:
        session.execute(delete(Snapshot).where(Snapshot.id.in_([r.id for r in rows])))
    session.execute(
        delete(SnapshotRejection).where(
            SnapshotRejection.community_id == community,
            SnapshotRejection.received_ms < before_ms,
        )
    )
    return len(rows), unreferenced(session, hashes)


def expire_orphan_rejections(session: Session, known: Iterable[str], before_ms: int) -> None:
    """Dead letters of no known community (unknown topics, deleted communities) expire too."""
    session.execute(
        delete(SnapshotRejection).where(
            or_(
                SnapshotRejection.community_id.is_(None),
                SnapshotRejection.community_id.not_in(list(known)),
            ),
            SnapshotRejection.received_ms < before_ms,
        )
    )


def unreferenced(
    session: Session, files: Iterable[tuple[Variant, str]]
) -> list[tuple[Variant, str]]:
    """Those of ``files`` that no snapshot row refers to (the same bytes may serve several)."""
    out = []
    for variant, sha in dict.fromkeys(files):
        column = HASH_COLUMNS[variant]
        if session.scalar(select(Snapshot.id).where(column == sha).limit(1)) is None:
            out.append((variant, sha))
    return out


# --- lookups (for the API) ----------------------------------------------------------------


def get_snapshot(session: Session, snapshot_pk: int) -> Snapshot | None:
    """A snapshot by its row id."""
    return session.get(Snapshot, snapshot_pk)


def find_snapshot(session: Session, device_id: str, snapshot_id: str) -> Snapshot | None:
    """A snapshot by robot and the robot's ``snapshot_id`` (as in detections and alert facts)."""
    return session.scalar(
        select(Snapshot).where(Snapshot.device_id == device_id, Snapshot.snapshot_id == snapshot_id)
    )


def file_sha256(row: Snapshot, variant: Variant) -> str | None:
    """The hash of one of the snapshot's files (None while the image has not arrived)."""
    return {
        Variant.ORIGINAL: row.original_sha256,
        Variant.PRIVACY: row.privacy_sha256,
        Variant.THUMBNAIL: row.thumbnail_sha256,
    }[variant]


def links(alert: Alert, row: Snapshot) -> bool:
    """True if the snapshot belongs to the alert.

    - the alert's facts name it: ``snapshot_id`` (robot.scene's first
      detection) or ``snapshot_ids`` (a list), for the alert's robot;
    - or, for robot.scene, it is a later detection merged into the same alert:
      same community and scene, between the alert's first and last detection,
      within the merge radius of where it was first seen.
    """
    if alert.community_id != row.community_id:
        return False
    facts = alert.facts or {}
    named = {facts.get("snapshot_id"), *(facts.get("snapshot_ids") or ())}
    if alert.device_id == row.device_id and row.snapshot_id in named:
        return True
    if alert.rule != SCENE_RULE or row.scene is None or facts.get("scene") != row.scene:
        return False
    if not alert.opened_ms <= row.at_ms <= alert.last_ms:
        return False
    if alert.lat is None or alert.lon is None or row.lat is None or row.lon is None:
        return False
    return distance_m(alert.lat, alert.lon, row.lat, row.lon) <= SCENE_RADIUS_M


def named_snapshot(session: Session, alert: Alert) -> Snapshot | None:
    """The frame an alert's facts name (the last of a list), for its notifications' link.

    The detection's frame of a scene, the last bad frame of a camera fault. The
    row is created if neither the detection nor the image has reached the
    imagery service yet, so that the link has its id whichever service is first.
    """
    facts = alert.facts or {}
    named = [facts.get("snapshot_id"), *(facts.get("snapshot_ids") or ())]
    # A detection's id may be one no snapshot topic can carry (the contract's ids differ).
    ids = [i for i in named if isinstance(i, str) and SNAPSHOT_ID_RE.fullmatch(i)]
    if not ids or not alert.device_id:
        return None
    return snapshot_row(session, alert.community_id, alert.device_id, ids[-1], alert.since_ms)


def alerts_for_snapshot(session: Session, row: Snapshot) -> list[Alert]:
    """The alerts a snapshot belongs to (usually one robot.scene alert; none below threshold)."""
    candidates = session.scalars(
        select(Alert).where(
            Alert.community_id == row.community_id,
            or_(
                (Alert.opened_ms <= row.at_ms) & (Alert.last_ms >= row.at_ms),
                (Alert.device_id == row.device_id)
                & Alert.opened_ms.between(row.at_ms, row.at_ms + NAMED_WITHIN_MS),
            ),
        )
    )
    return [alert for alert in candidates if links(alert, row)]


def snapshots_for_alert(session: Session, alert: Alert) -> list[Snapshot]:
    """The stored snapshots behind an alert, oldest first."""
    candidates = session.scalars(
        select(Snapshot)
        .where(
            Snapshot.community_id == alert.community_id,
            Snapshot.original_sha256.is_not(None),
            or_(
                Snapshot.at_ms.between(alert.opened_ms, alert.last_ms),
                (Snapshot.device_id == alert.device_id)
                & Snapshot.at_ms.between(alert.opened_ms - NAMED_WITHIN_MS, alert.opened_ms),
            ),
        )
        .order_by(Snapshot.at_ms)
    )
    return [row for row in candidates if links(alert, row)]
