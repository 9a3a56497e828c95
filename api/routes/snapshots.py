"""Patrol snapshots: list, metadata, and the images (privacy version, thumbnail, original).

Who sees a snapshot (``imagery/README.md``): admins, and a community's
operators and viewers, see all of their community's; a grid worker sees the
snapshots of a robot in their grids (as they see its state), and those that
belong to an alert routed to their grids. The privacy version and the
thumbnail go to whoever sees the snapshot; the robot's original bytes, faces
unblurred, to admins only.

The privacy version and the thumbnail also open from a signed link
(``?expires=&sig=``, ``imagery/links.py``) without any header: the link the
alerts service sends to the people it notifies. The signature is the
permission, so no role is checked then; a link is refused (403) once it has
expired, if anything in it was changed, and always for the original.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Security
from fastapi.responses import FileResponse
from pydantic import BaseModel
from sqlalchemy import Select, false, func, or_, select
from sqlalchemy.orm import Session

from alerts.models import Alert
from api.access import Principal
from api.crud import Page, in_community, paginate
from api.deps import (
    AdminUser,
    CommunityQuery,
    CurrentUser,
    PagingDep,
    RowId,
    SessionDep,
    StateDep,
    api_key_header,
    current_principal,
    oauth2,
)
from api.routes.devices import allowed_devices
from api.state import AppState
from devices.contract import DEVICE_ID_RE, EPOCH_MS_MAX
from devices.patrol_robot import KIND as ROBOT
from imagery.files import ImageFiles, Variant
from imagery.links import LinkRefused
from imagery.models import Snapshot
from imagery.store import alerts_for_snapshot, file_sha256, get_snapshot, snapshots_for_alert

router = APIRouter(prefix="/api/v1/snapshots", tags=["snapshots"])

PREFIX = router.prefix
# A file's name is its SHA-256: its bytes never change, so a client may keep it. Private:
# it is personal (a face in a privacy version is blurred, but a place and time are not).
IMAGE_CACHE = "private, max-age=86400, immutable"
JPEG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "the JPEG"},
    404: {"description": "no such snapshot for you, or its image has not arrived"},
}
SIGNED_RESPONSE: dict[int | str, dict[str, Any]] = {
    **JPEG_RESPONSE,
    403: {"description": "a signed link that has expired or does not match"},
}
# A link's expiry, as Unix seconds: bounded so that no request makes a huge integer.
Expires = Annotated[
    int | None, Query(ge=0, le=2**53, description="signed link: valid until (Unix seconds)")
]
Signature = Annotated[
    str | None, Query(max_length=128, description="signed link: its HMAC-SHA256 (hex)")
]


class SnapshotPublic(BaseModel):
    """A snapshot: the detection behind it, what was found in it, and where its images are.

    The image URLs are null while only the detection has arrived; ``original_url``
    is given to admins only.
    """

    id: int
    community: str
    device_id: str
    snapshot_id: str
    at_ms: int
    received_ms: int | None
    scene: str | None
    confidence: float | None
    lat: float | None
    lon: float | None
    width: int | None
    height: int | None
    faces: int | None
    people: int | None
    flags: list[str]
    checkpoint_id: str | None
    thumbnail_url: str | None
    privacy_url: str | None
    original_url: str | None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": 7,
                    "community": "zjxc",
                    "device_id": "zjxc-robot-1",
                    "snapshot_id": "s-20261122-0131-0007",
                    "at_ms": 1795195860000,
                    "received_ms": 1795195860412,
                    "scene": "fire_lane_blocked",
                    "confidence": 0.91,
                    "lat": 36.8131,
                    "lon": 118.0549,
                    "width": 640,
                    "height": 480,
                    "faces": 0,
                    "people": 1,
                    "flags": [],
                    "checkpoint_id": None,
                    "thumbnail_url": "/api/v1/snapshots/7/thumbnail.jpg",
                    "privacy_url": "/api/v1/snapshots/7/privacy.jpg",
                    "original_url": None,
                }
            ]
        }
    }


class SnapshotDetail(SnapshotPublic):
    """A snapshot with its quality measures and the alerts it belongs to that you may see."""

    brightness: float | None
    sharpness: float | None
    entropy: float | None
    uniform: float | None
    qr_codes: list[str]
    alert_ids: list[int]


def snapshot_public(row: Snapshot, principal: Principal) -> SnapshotPublic:
    """The public view of a snapshot row, with the image URLs this principal may follow."""
    return SnapshotPublic(**_public_fields(row, principal))


def _public_fields(row: Snapshot, principal: Principal) -> dict[str, Any]:
    def url(variant: Variant) -> str | None:
        return f"{PREFIX}/{row.id}/{variant.value}.jpg" if row.has_image else None

    return {
        "id": row.id,
        "community": row.community_id,
        "device_id": row.device_id,
        "snapshot_id": row.snapshot_id,
        "at_ms": row.at_ms,
        "received_ms": row.received_ms,
        "scene": row.scene,
        "confidence": row.confidence,
        "lat": row.lat,
        "lon": row.lon,
        "width": row.width,
        "height": row.height,
        "faces": row.faces,
        "people": row.people,
        "flags": row.flags,
        "checkpoint_id": row.checkpoint_id,
        "thumbnail_url": url(Variant.THUMBNAIL),
        "privacy_url": url(Variant.PRIVACY),
        "original_url": url(Variant.ORIGINAL) if principal.is_admin else None,
    }


def _grid_scope(state: AppState, session: Session, principal: Principal) -> Any:
    """A grid worker's snapshots as a condition: their grids' robots', and their alerts'."""
    community = principal.community or ""
    robots = allowed_devices(state, session, principal) or set()
    oldest = session.scalar(
        select(func.min(Snapshot.at_ms)).where(Snapshot.community_id == community)
    )
    if oldest is None:
        return false()
    # Only a robot's alerts name frames or merge detections (imagery.store.links), and
    # none that ended before the oldest frame kept can have one.
    alerts = session.scalars(
        select(Alert).where(
            Alert.community_id == community,
            Alert.kind == ROBOT.name,
            Alert.grid.in_(principal.grid_names),
            Alert.last_ms >= oldest,
        )
    )
    linked = {row.id for alert in alerts for row in snapshots_for_alert(session, alert)}
    return or_(Snapshot.device_id.in_(sorted(robots)), Snapshot.id.in_(sorted(linked)))


def _visible_alerts(session: Session, principal: Principal, row: Snapshot) -> list[Alert]:
    alerts = alerts_for_snapshot(session, row)
    if principal.grid_scoped:
        return [alert for alert in alerts if alert.grid in principal.grid_names]
    return alerts


def visible_snapshot(
    state: AppState, session: Session, principal: Principal, snapshot: int
) -> tuple[Snapshot, list[Alert]]:
    """The snapshot and its alerts that the principal sees, else 404 (not disclosed)."""
    row = get_snapshot(session, snapshot)
    if row is None or not principal.sees_community(row.community_id):
        raise HTTPException(404, f"snapshot {snapshot} not found")
    alerts = _visible_alerts(session, principal, row)
    if principal.grid_scoped and not alerts:
        robots = allowed_devices(state, session, principal) or set()
        if row.device_id not in robots:
            raise HTTPException(404, f"snapshot {snapshot} not found")
    return row, alerts


def linked_snapshots(session: Session, principal: Principal, alert: Alert) -> list[SnapshotPublic]:
    """The stored snapshots behind an alert the principal sees (so they see these too)."""
    return [snapshot_public(row, principal) for row in snapshots_for_alert(session, alert)]


@router.get("", response_model=Page[SnapshotPublic])
def list_snapshots(
    principal: CurrentUser,
    state: StateDep,
    session: SessionDep,
    paging: PagingDep,
    community: CommunityQuery = None,
    device_id: Annotated[str | None, Query(pattern=DEVICE_ID_RE.pattern)] = None,
    scene: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None,
    since_ms: Annotated[
        int | None, Query(ge=0, le=EPOCH_MS_MAX, description="taken at or after")
    ] = None,
    until_ms: Annotated[
        int | None, Query(ge=0, le=EPOCH_MS_MAX, description="taken before")
    ] = None,
) -> Page[SnapshotPublic]:
    """Snapshots you may see, newest first, filtered by community, robot, scene and time."""
    query: Select[Any] = select(Snapshot).order_by(Snapshot.at_ms.desc(), Snapshot.id.desc())
    query = in_community(query, Snapshot.community_id, principal, community)
    for column, value in ((Snapshot.device_id, device_id), (Snapshot.scene, scene)):
        if value is not None:
            query = query.where(column == value)
    if since_ms is not None:
        query = query.where(Snapshot.at_ms >= since_ms)
    if until_ms is not None:
        query = query.where(Snapshot.at_ms < until_ms)
    if principal.grid_scoped:
        query = query.where(_grid_scope(state, session, principal))
    return paginate(session, query, paging, lambda row: snapshot_public(row, principal))


@router.get("/{snapshot}", response_model=SnapshotDetail, responses={404: {}})
def read_snapshot(
    snapshot: RowId, principal: CurrentUser, state: StateDep, session: SessionDep
) -> SnapshotDetail:
    """One snapshot: detection, quality, image URLs and the alerts it belongs to."""
    row, alerts = visible_snapshot(state, session, principal, snapshot)
    return SnapshotDetail(
        **_public_fields(row, principal),
        brightness=row.brightness,
        sharpness=row.sharpness,
        entropy=row.entropy,
        uniform=row.uniform,
        qr_codes=row.qr_codes,
        alert_ids=[alert.id for alert in alerts],
    )


def _image(state: AppState, row: Snapshot, variant: Variant) -> FileResponse:
    sha = file_sha256(row, variant)
    path: FilePath | None = None
    if sha is not None:
        path = ImageFiles(state.settings.imagery_root).path(variant, sha)
    # A file can be missing although its row names it: retention deleted it meanwhile.
    if path is None or not path.is_file():
        raise HTTPException(404, f"snapshot {row.id} has no {variant.value} image (yet)")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": IMAGE_CACHE})


def image_reader(variant: Variant) -> Callable[..., Coroutine[Any, Any, Principal | None]]:
    """Who fetches ``variant``: the user behind the header, or None for a valid signed link."""

    async def reader(
        snapshot: RowId,
        state: StateDep,
        token: Annotated[str | None, Security(oauth2)],
        api_key: Annotated[str | None, Security(api_key_header)],
        expires: Expires = None,
        sig: Signature = None,
    ) -> Principal | None:
        if expires is None and sig is None:
            return await current_principal(state, token, api_key)
        if expires is None or sig is None:
            raise HTTPException(403, "a signed link needs both expires and sig")
        try:
            state.links.check(snapshot, variant, expires, sig, state.clock.now_ms() // 1000)
        except LinkRefused as exc:
            raise HTTPException(403, str(exc)) from None
        return None

    return reader


def _readable(
    state: AppState, session: Session, reader: Principal | None, snapshot: int
) -> Snapshot:
    if reader is not None:
        return visible_snapshot(state, session, reader, snapshot)[0]
    row = get_snapshot(session, snapshot)
    if row is None:  # deleted by retention since the link was made
        raise HTTPException(404, f"snapshot {snapshot} not found")
    return row


PrivacyReader = Annotated[Principal | None, Depends(image_reader(Variant.PRIVACY))]
ThumbnailReader = Annotated[Principal | None, Depends(image_reader(Variant.THUMBNAIL))]


@router.get("/{snapshot}/privacy.jpg", response_class=FileResponse, responses=SIGNED_RESPONSE)
def privacy_image(
    snapshot: RowId, reader: PrivacyReader, state: StateDep, session: SessionDep
) -> FileResponse:
    """The frame with faces and people blurred (a header, or a signed link)."""
    return _image(state, _readable(state, session, reader, snapshot), Variant.PRIVACY)


@router.get("/{snapshot}/thumbnail.jpg", response_class=FileResponse, responses=SIGNED_RESPONSE)
def thumbnail_image(
    snapshot: RowId, reader: ThumbnailReader, state: StateDep, session: SessionDep
) -> FileResponse:
    """A small copy of the privacy version, 320 px wide (a header, or a signed link)."""
    return _image(state, _readable(state, session, reader, snapshot), Variant.THUMBNAIL)


@router.get(
    "/{snapshot}/original.jpg",
    response_class=FileResponse,
    responses={**JPEG_RESPONSE, 403: {"description": "not an admin"}},
)
def original_image(
    snapshot: RowId, principal: AdminUser, state: StateDep, session: SessionDep
) -> FileResponse:
    """The bytes the robot sent, faces unblurred: admins only."""
    row, _ = visible_snapshot(state, session, principal, snapshot)
    return _image(state, row, Variant.ORIGINAL)
