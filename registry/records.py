"""Read the registry as the runners need it: ``Community`` and ``DeviceRecord`` (devices.contract).

Devices load in one query (outer joins to their building, unit and household),
since ingest reloads every device of a city (~250,000) periodically.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from devices import KINDS, contract
from registry.models import Building, Community, Device, Household, Unit

log = logging.getLogger(__name__)

# _Row below names these columns, in this order.
_DEVICES: Select[Any] = (
    select(
        Device.device_id,
        Device.community_id,
        Device.kind,
        Device.place,
        Device.attributes,
        # A device without a position of its own (a door, a meter) is where its building is.
        func.coalesce(Device.lat, Building.lat).label("lat"),
        func.coalesce(Device.lon, Building.lon).label("lon"),
        Building.number,
        Unit.number,
        Unit.households,
        Household.room,
        Household.care,
    )
    .outerjoin(Building, Device.building_id == Building.id)
    .outerjoin(Unit, Device.unit_id == Unit.id)
    .outerjoin(Household, Device.household_id == Household.id)
    .order_by(Device.device_id)
)


def load_communities(session: Session) -> list[contract.Community]:
    """Every community, by id."""
    rows = session.execute(
        select(
            Community.id, Community.name, Community.lat, Community.lon, Community.timezone
        ).order_by(Community.id)
    )
    return [
        contract.Community(id=id_, name=name, lat=lat, lon=lon, timezone=timezone)
        for id_, name, lat, lon, timezone in rows
    ]


def load_devices(session: Session, community: str | None = None) -> list[contract.DeviceRecord]:
    """Every device, or one community's, by device id."""
    query = _DEVICES if community is None else _DEVICES.where(Device.community_id == community)
    return _records(session, query)


def get_device(session: Session, device_id: str) -> contract.DeviceRecord | None:
    """One device, or None if it is not registered."""
    records = _records(session, _DEVICES.where(Device.device_id == device_id))
    return records[0] if records else None


class _Row(NamedTuple):
    """One row of ``_DEVICES``; a plain tuple reads much faster than a Row by name."""

    device_id: str
    community_id: str
    kind: str
    place: str | None
    attributes: dict[str, Any]
    lat: float | None
    lon: float | None
    building: str | None
    unit: str | None
    unit_households: int | None
    room: str | None
    care: dict[str, Any] | None


def _records(session: Session, query: Select[Any]) -> list[contract.DeviceRecord]:
    records = []
    unknown: set[str] = set()
    for values in session.execute(query):
        row = _Row(*values)
        if row.kind in KINDS:
            records.append(_record(row))
        else:
            unknown.add(row.kind)
    if unknown:
        # Left by an older release that had these kinds; ingest rejects them anyway.
        log.warning("registry: skipped devices of unknown kinds %s", sorted(unknown))
    return records


def _record(row: _Row) -> contract.DeviceRecord:
    kind = KINDS[row.kind]
    placement = {"building": row.building, "unit": row.unit, "room": row.room}
    candidates = {**row.attributes, **placement}
    tags = {key: str(candidates[key]) for key in kind.tag_keys if candidates.get(key) is not None}
    return contract.DeviceRecord(
        device_id=row.device_id,
        community=row.community_id,
        kind=row.kind,
        place=row.place or _place_words(row) or f"{kind.title_zh} {row.device_id}",
        lat=row.lat,
        lon=row.lon,
        tags=tags,
        attributes=_attributes(row),
    )


def _place_words(row: _Row) -> str:
    """The placement as people say it: 3号楼2单元501 (the caller adds the community)."""
    words = [
        f"{row.building}号楼" if row.building is not None else "",
        f"{row.unit}单元" if row.unit is not None else "",
        row.room or "",
    ]
    return "".join(words)


def _attributes(row: _Row) -> dict[str, Any]:
    """The kind's attributes plus what the device's placement tells about it (no personal data)."""
    attributes = dict(row.attributes)
    if row.unit_households is not None:
        attributes["unit_households"] = row.unit_households
    if row.care is not None:
        attributes["care"] = row.care
    return attributes
