"""Devices: the registry entries (CRUD) and the latest state of one device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.access import Principal
from api.crud import Page, get_or_404, in_community, paginate, writing
from api.deps import (
    AdminUser,
    CommunityQuery,
    CommunitySlug,
    CurrentUser,
    PagingDep,
    SessionDep,
    StateDep,
)
from api.influxql import by_device, latest_statements
from api.state import AppState
from broker.credentials import UnknownAccount, issue, revoke
from devices import KINDS
from devices.contract import DeviceRecord
from devices.points import STATUS_MEASUREMENT
from gridwatch.security import apply_accounts
from influx.client import InfluxError
from registry.document import DeviceSpec, Latitude, Longitude
from registry.importer import PLACEMENT_TAGS
from registry.models import Building, Community, Device, Household, Unit
from registry.records import get_device

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

DEVICE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN, examples=["zjxc-door-b03-u2"])]
KindName = Annotated[str, Query(pattern="^(" + "|".join(KINDS) + ")$", description="device kind")]


class DevicePublic(BaseModel):
    """A registered device and where it is."""

    device_id: str
    community: str
    kind: str
    place: str
    building: str | None
    unit: str | None
    room: str | None
    lat: float | None
    lon: float | None
    attributes: dict[str, Any]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "device_id": "zjxc-door-b03-u2",
                    "community": "zjxc",
                    "kind": "door",
                    "place": "3号楼2单元",
                    "building": "3",
                    "unit": "2",
                    "room": None,
                    "lat": 36.8117,
                    "lon": 118.0562,
                    "attributes": {},
                }
            ]
        }
    }


class DeviceCredentials(BaseModel):
    """How the device logs in to the broker (issued by broker security, see the README)."""

    mqtt_username: str
    mqtt_password: str


class DeviceCreated(DevicePublic):
    """A device just registered, with the credentials issued for it."""

    credentials: DeviceCredentials = Field(
        description="the device's broker login (username: its id), shown this once: only a "
        "hash is kept; POST /devices/{id}/credentials issues a new password"
    )


class DeviceCreate(DeviceSpec):
    """A new device, as in a community file's ``devices:`` list, plus its community."""

    community: CommunitySlug

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "community": "zjxc",
                    "id": "zjxc-lamp-g001",
                    "kind": "streetlight",
                    "lat": 36.8116,
                    "lon": 118.0545,
                    "place": "G回路 1号灯",
                    "attributes": {"circuit": "G", "rated_power_w": 100},
                }
            ]
        }
    )


class DeviceUpdate(BaseModel):
    """Fields to change; ``attributes`` replaces them and is checked against the kind."""

    place: Annotated[str, Field(max_length=128)] | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None
    attributes: dict[str, Any] | None = None


class LatestState(BaseModel):
    """What the device last said."""

    device_id: str
    community: str
    kind: str
    place: str
    online: bool | None
    last_seen_ms: int | None
    values: dict[str, Any]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "device_id": "zjxc-door-b03-u2",
                    "community": "zjxc",
                    "kind": "door",
                    "place": "3号楼2单元",
                    "online": True,
                    "last_seen_ms": 1795370829756,
                    "values": {"locked": True, "open": False, "rssi_dbm": -71, "temp_c": 18.5},
                }
            ]
        }
    }


def device_public(row: Device) -> DevicePublic:
    """The public view of a device row (its placement as numbers and words)."""
    building = row.building.number if row.building else None
    unit = row.unit.number if row.unit else None
    room = row.household.room if row.household else None
    words = "".join(
        [f"{building}号楼" if building else "", f"{unit}单元" if unit else "", room or ""]
    )
    return DevicePublic(
        device_id=row.device_id,
        community=row.community_id,
        kind=row.kind,
        place=row.place or words or f"{KINDS[row.kind].title_zh} {row.device_id}",
        building=building,
        unit=unit,
        room=room,
        lat=row.lat if row.lat is not None else (row.building.lat if row.building else None),
        lon=row.lon if row.lon is not None else (row.building.lon if row.building else None),
        attributes=row.attributes,
    )


def allowed_devices(state: AppState, session: Session, principal: Principal) -> set[str] | None:
    """The devices a grid worker may see (None: no grid limit for this principal)."""
    if not principal.grid_scoped or principal.community is None:
        return None
    return state.grid_maps.get(session, principal.community).devices_in(principal.grid_ids)


def _not_registered(device_id: str) -> HTTPException:
    return HTTPException(404, f"device {device_id} is not registered")


def scoped_record(
    state: AppState, session: Session, principal: Principal, device_id: str
) -> DeviceRecord:
    """A registered device the principal may see, else 404 (others' devices are not disclosed)."""
    record = state.devices.get(device_id)
    if record is None:
        record = get_device(session, device_id)
        if record is not None:
            state.devices.put(device_id, record)
    if record is None or not principal.sees_community(record.community):
        raise _not_registered(device_id)
    allowed = allowed_devices(state, session, principal)
    if allowed is not None and device_id not in allowed:
        raise _not_registered(device_id)
    return record


async def visible_records(
    state: AppState, principal: Principal, device_ids: Sequence[str]
) -> list[DeviceRecord]:
    """``scoped_record`` of each id: from the cache on the event loop when it can be.

    A device not cached, or a grid worker's scope (the grid map), takes a worker thread.
    """
    if not principal.grid_scoped:
        cached = [state.devices.get(device_id) for device_id in device_ids]
        records = [r for r in cached if r is not None]
        if len(records) == len(cached):
            for record in records:
                if not principal.sees_community(record.community):
                    raise _not_registered(record.device_id)
            return records
    return await state.read(
        lambda session: [scoped_record(state, session, principal, d) for d in device_ids]
    )


@router.get("", response_model=Page[DevicePublic])
def list_devices(
    principal: CurrentUser,
    state: StateDep,
    session: SessionDep,
    paging: PagingDep,
    community: CommunityQuery = None,
    kind: KindName | None = None,
    building: Annotated[str | None, Query(pattern=r"^[0-9A-Za-z-]{1,16}$")] = None,
) -> Page[DevicePublic]:
    """Devices you may see, by kind or building number."""
    query = in_community(
        select(Device).order_by(Device.device_id), Device.community_id, principal, community
    )
    if kind is not None:
        query = query.where(Device.kind == kind)
    if building is not None:
        query = query.join(Building, Device.building_id == Building.id).where(
            Building.number == building
        )
    allowed = allowed_devices(state, session, principal)
    if allowed is not None:
        query = query.where(Device.device_id.in_(allowed))
    return paginate(session, query, paging, device_public)


@router.post("", response_model=DeviceCreated, status_code=201, responses={409: {}, 422: {}})
def create_device(body: DeviceCreate, _: AdminUser, state: StateDep) -> DeviceCreated:
    """Register a device at its placement; ingest accepts its messages within a refresh."""
    with writing(state) as session:
        get_or_404(session, Community, body.community, "community")
        if session.get(Device, body.id) is not None:
            raise HTTPException(409, f"device {body.id} is already registered")
        row = Device(device_id=body.id, community_id=body.community, kind=body.kind)
        row.attributes = _attributes(body.kind, body.attributes)
        _place(session, row, body)
        row.lat, row.lon, row.place = body.lat, body.lon, body.place
        session.add(row)
        session.flush()
        session.refresh(row)
        credentials = _issue(session, state, row.device_id)
        created = DeviceCreated(**device_public(row).model_dump(), credentials=credentials)
    apply_accounts(state.sessions, state.settings)
    return created


def _issue(session: Session, state: AppState, device_id: str) -> DeviceCredentials:
    issued = issue(session, device_id, state.clock.now_ms())
    return DeviceCredentials(mqtt_username=issued.username, mqtt_password=issued.password)


def _attributes(kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    if kind not in KINDS:
        raise HTTPException(422, f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    try:
        return KINDS[kind].validate_attributes(raw)
    except msgspec.ValidationError as exc:
        raise HTTPException(422, f"attributes: {exc}") from None


def _place(session: Session, row: Device, body: DeviceCreate) -> None:
    """Resolve building/unit/room numbers within the community; the kind's tags must have values."""
    if body.building is not None:
        row.building = session.scalar(
            select(Building).where(
                Building.community_id == body.community, Building.number == body.building
            )
        )
        if row.building is None:
            raise HTTPException(422, f"no building {body.building} in {body.community}")
    if body.unit is not None and row.building is not None:
        row.unit = session.scalar(
            select(Unit).where(Unit.building_id == row.building.id, Unit.number == body.unit)
        )
        if row.unit is None:
            raise HTTPException(422, f"building {body.building} has no unit {body.unit}")
    if body.room is not None and row.unit is not None:
        row.household = session.scalar(
            select(Household).where(Household.unit_id == row.unit.id, Household.room == body.room)
        )
        if row.household is None:
            raise HTTPException(422, f"no household {body.room} in that unit")
    for tag in KINDS[body.kind].tag_keys:
        value = getattr(body, tag) if tag in PLACEMENT_TAGS else row.attributes.get(tag)
        if value is None:
            raise HTTPException(422, f"a {body.kind} needs its {tag}")


@router.get("/{device_id}", response_model=DevicePublic, responses={404: {}})
def read_device(
    device_id: DeviceId, principal: CurrentUser, state: StateDep, session: SessionDep
) -> DevicePublic:
    """One device."""
    scoped_record(state, session, principal, device_id)
    return device_public(get_or_404(session, Device, device_id, "device"))


@router.patch("/{device_id}", response_model=DevicePublic, responses={404: {}, 422: {}})
def update_device(
    device_id: DeviceId, body: DeviceUpdate, _: AdminUser, state: StateDep
) -> DevicePublic:
    """Change a device's place name, position or attributes."""
    with writing(state) as session:
        row = get_or_404(session, Device, device_id, "device")
        if body.attributes is not None:
            row.attributes = _attributes(row.kind, body.attributes)
        for name in ("place", "lat", "lon"):
            if name in body.model_fields_set:
                setattr(row, name, getattr(body, name))
        if (row.lat is None) != (row.lon is None):
            raise HTTPException(422, "give both lat and lon, or neither")
        return device_public(row)


@router.delete("/{device_id}", status_code=204, responses={404: {}})
def delete_device(device_id: DeviceId, _: AdminUser, state: StateDep) -> Response:
    """Remove a device from the registry (its data stays in InfluxDB; ingest then rejects it)."""
    with writing(state) as session:
        session.delete(get_or_404(session, Device, device_id, "device"))
    apply_accounts(state.sessions, state.settings)  # its broker account goes with it
    return Response(status_code=204)


@router.post("/{device_id}/credentials", response_model=DeviceCredentials, responses={404: {}})
def rotate_credentials(device_id: DeviceId, _: AdminUser, state: StateDep) -> DeviceCredentials:
    """A new broker password for the device, shown this once; the old one stops working now."""
    with writing(state) as session:
        get_or_404(session, Device, device_id, "device")
        credentials = _issue(session, state, device_id)
    apply_accounts(state.sessions, state.settings)
    return credentials


@router.delete("/{device_id}/credentials", status_code=204, responses={404: {}})
def revoke_credentials(device_id: DeviceId, _: AdminUser, state: StateDep) -> Response:
    """Revoke the device's broker account: disconnected now, refused until issued again."""
    with writing(state) as session:
        try:
            revoke(session, device_id, state.clock.now_ms())
        except UnknownAccount as exc:
            raise HTTPException(404, str(exc)) from None
    apply_accounts(state.sessions, state.settings)
    return Response(status_code=204)


@router.get("/{device_id}/latest", response_model=LatestState, responses={404: {}, 503: {}})
async def latest_state(device_id: DeviceId, principal: CurrentUser, state: StateDep) -> Response:
    """The device's latest telemetry (from InfluxDB) and whether it is online."""
    records = await visible_records(state, principal, [device_id])
    body = state.answers.latest.get(device_id)
    if body is None:
        latest = (await latest_states(state, records))[0]
        body = latest.__pydantic_serializer__.to_json(latest)
        state.answers.latest.put(device_id, body)
    return Response(body, media_type="application/json")


async def latest_states(state: AppState, records: list[DeviceRecord]) -> list[LatestState]:
    """The latest state of each device (all of one kind), in one InfluxDB round trip."""
    if not records:
        return []
    kind = KINDS[records[0].kind]
    try:
        series = await state.influx.query(latest_statements(kind, [r.device_id for r in records]))
    except InfluxError as exc:
        raise HTTPException(503, f"InfluxDB: {exc}") from exc
    telemetry = by_device([s for s in series if s.name == kind.measurement])
    status = by_device([s for s in series if s.name == STATUS_MEASUREMENT])
    return [latest_of(r, telemetry.get(r.device_id), status.get(r.device_id)) for r in records]


def latest_of(
    record: DeviceRecord, telemetry: dict[str, Any] | None, status: dict[str, Any] | None
) -> LatestState:
    """A device's state from its newest telemetry and status rows."""
    tag_keys = {"community", "device_id", *record.tags}
    values = {k: v for k, v in (telemetry or {}).items() if k != "time" and k not in tag_keys}
    times = [
        t for t in ((telemetry or {}).get("time"), (status or {}).get("time")) if t is not None
    ]
    return LatestState(
        device_id=record.device_id,
        community=record.community,
        kind=record.kind,
        place=record.place,
        online=None if status is None else bool(status.get("online")),
        last_seen_ms=max(times) if times else None,
        values={k: v for k, v in values.items() if v is not None},
    )
