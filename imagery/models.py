"""Imagery's SQL tables, on the registry's metadata (migration ``0004_imagery``).

- ``snapshots``: one row per robot and ``snapshot_id``, created by whichever
  comes first, the detection event or the image: the detection gives time,
  place, scene and confidence, the image gives the three files (by SHA-256),
  sizes, quality and what was blurred or read in it.
- ``snapshot_rejections``: the dead letters: what was refused, why, from whom.
- ``robot_cameras``: each robot's run of bad frames, and whether it is
  reported as a camera fault.

Times are ms since the epoch. ``at_ms`` is the frame's time: the detection's
``ts`` once known (device time, as everywhere else), the arrival time until then.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from registry.models import Base, JsonDocument

EVIDENCE_PENDING = "pending"  # a checkpoint was read, the detection's time is not known yet
EVIDENCE_PUBLISHED = "published"


class Snapshot(Base):
    """A patrol robot's snapshot: its detection, its files and what was found in it."""

    __tablename__ = "snapshots"
    __table_args__ = (
        UniqueConstraint("device_id", "snapshot_id"),
        Index("ix_snapshots_community_id_at_ms", "community_id", "at_ms"),
        Index("ix_snapshots_device_id_at_ms", "device_id", "at_ms"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    community_id: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[str] = mapped_column(String(64))
    snapshot_id: Mapped[str] = mapped_column(String(64))
    at_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int | None] = mapped_column(BigInteger)
    # From the detection event.
    detection_ts: Mapped[int | None] = mapped_column(BigInteger)
    scene: Mapped[str | None] = mapped_column(String(32))
    confidence: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    # From the image.
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    original_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    original_bytes: Mapped[int | None] = mapped_column(Integer)
    privacy_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    privacy_bytes: Mapped[int | None] = mapped_column(Integer)
    privacy_width: Mapped[int | None] = mapped_column(Integer)
    privacy_height: Mapped[int | None] = mapped_column(Integer)
    thumbnail_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    thumbnail_bytes: Mapped[int | None] = mapped_column(Integer)
    thumbnail_width: Mapped[int | None] = mapped_column(Integer)
    thumbnail_height: Mapped[int | None] = mapped_column(Integer)
    faces: Mapped[int | None] = mapped_column(Integer)
    people: Mapped[int | None] = mapped_column(Integer)
    brightness: Mapped[float | None] = mapped_column(Float)
    sharpness: Mapped[float | None] = mapped_column(Float)
    entropy: Mapped[float | None] = mapped_column(Float)
    uniform: Mapped[float | None] = mapped_column(Float)
    dark: Mapped[bool | None] = mapped_column()
    blurred: Mapped[bool | None] = mapped_column()
    obstructed: Mapped[bool | None] = mapped_column()
    qr_codes: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    checkpoint_route: Mapped[str | None] = mapped_column(String(32))
    checkpoint_id: Mapped[str | None] = mapped_column(String(64))
    evidence: Mapped[str | None] = mapped_column(String(16))

    @property
    def has_image(self) -> bool:
        """True once the image arrived and was stored (a detection alone makes a row too)."""
        return self.original_sha256 is not None

    @property
    def flags(self) -> list[str]:
        """The quality flags set."""
        names = ("dark", "blurred", "obstructed")
        return [
            n for n, on in zip(names, (self.dark, self.blurred, self.obstructed), strict=True) if on
        ]


class SnapshotRejection(Base):
    """A snapshot refused: the dead letter (the image itself is not kept)."""

    __tablename__ = "snapshot_rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    community_id: Mapped[str | None] = mapped_column(String(32))
    device_id: Mapped[str | None] = mapped_column(String(64))
    snapshot_id: Mapped[str | None] = mapped_column(String(64))
    topic: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    head: Mapped[str] = mapped_column(String(64))  # the first 32 bytes, hex: what it was


class RobotCamera(Base):
    """A robot's camera as the quality checks see it."""

    __tablename__ = "robot_cameras"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    community_id: Mapped[str] = mapped_column(String(32))
    bad_streak: Mapped[int] = mapped_column(Integer, default=0)
    # The snapshot ids of the current run of bad frames.
    bad_snapshots: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    fault: Mapped[bool] = mapped_column(default=False)
    fault_since_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_ms: Mapped[int] = mapped_column(BigInteger)
