"""Import a community file into the registry, replacing that community's content.

Everything is checked before anything is written: the file's shape (see
``registry.document``), its cross-references (grids, units, rooms), each
device's kind and attributes, and that no device id belongs to another
community. Then the community's rows are reconciled with the file by natural
key (grid id, building number, unit number, room, worker phone, device id):
rows still in the file are updated in place and keep their ids and
``created_at``, new ones are added, the rest are deleted. The caller owns the
transaction: commit after a successful import, roll back after an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from devices import KINDS
from registry.document import (
    BuildingSpec,
    CommunityDocument,
    CommunitySpec,
    ContactSpec,
    DeviceSpec,
    GridSpec,
    HouseholdSpec,
    RegistryImportError,
    StaffEntry,
    UnitSpec,
    load_yaml,
    parse_document,
)
from registry.models import Building, Community, Device, Grid, GridWorker, Household, Unit

__all__ = [
    "CommunityDocument",
    "ImportSummary",
    "RegistryImportError",
    "import_document",
    "import_file",
]

# Placement tags a kind may ask for, from the least to the most specific.
PLACEMENT_TAGS = ("building", "unit", "room")


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What the community holds after an import: one count per table."""

    community: str
    grids: int
    workers: int
    buildings: int
    units: int
    households: int
    devices: int
    # Grids whose name the file changed, old name: new name (alerts.grids follows them).
    renamed_grids: Mapping[str, str] = field(default_factory=dict)


def import_file(session: Session, path: str | Path) -> ImportSummary:
    """Import a community YAML file; raise ``RegistryImportError`` naming each problem."""
    path = Path(path)
    return _import(session, load_yaml(path), source=str(path))


def import_document(session: Session, data: Mapping[str, Any]) -> ImportSummary:
    """Import a community file already read into Python objects (see ``import_file``)."""
    return _import(session, data, source="document")


def _import(session: Session, data: Any, source: str) -> ImportSummary:
    document = parse_document(source, data)
    problems = _check_document(document) + _check_device_ids_free(session, document)
    if problems:
        raise RegistryImportError(source, problems)
    renamed = _store(session, document)
    session.flush()
    return _summarise(document, renamed)


def _summarise(document: CommunityDocument, renamed_grids: dict[str, str]) -> ImportSummary:
    units = [unit for building in document.buildings for unit in building.units]
    return ImportSummary(
        community=document.community.id,
        grids=len(document.grids),
        workers=len(document.staff()),
        buildings=len(document.buildings),
        units=len(units),
        households=sum(len(unit.rooms) for unit in units),
        devices=len(document.devices),
        renamed_grids=renamed_grids,
    )


# --- checks: each returns the problems it found, with their paths in the file ----


def _check_document(document: CommunityDocument) -> list[str]:
    layout = _Layout.of(document)
    return [
        *_duplicates((f"grids[{i}].id", grid.id) for i, grid in enumerate(document.grids)),
        # A grid worker sees alerts by their grid's name: two grids of one name would
        # show each one's alerts to the other's workers.
        *_duplicates((f"grids[{i}].name", grid.name) for i, grid in enumerate(document.grids)),
        *_duplicates((f"{entry.path}.phone", entry.person.phone) for entry in document.staff()),
        *_check_buildings(document),
        *(
            problem
            for index, device in enumerate(document.devices)
            for problem in _check_device(f"devices[{index}]", device, layout)
        ),
        *_duplicates((f"devices[{i}].id", device.id) for i, device in enumerate(document.devices)),
    ]


def _duplicates(keyed: Iterable[tuple[str, object]]) -> list[str]:
    first_seen: dict[object, str] = {}
    problems = []
    for path, key in keyed:
        if key in first_seen:
            problems.append(f"{path}: {key!r} is already used at {first_seen[key]}")
        else:
            first_seen[key] = path
    return problems


def _check_buildings(document: CommunityDocument) -> list[str]:
    grids = {grid.id for grid in document.grids}
    problems = _duplicates(
        (f"buildings[{i}].number", building.number) for i, building in enumerate(document.buildings)
    )
    for b, building in enumerate(document.buildings):
        path = f"buildings[{b}]"
        if building.grid not in grids:
            problems.append(f"{path}.grid: no grid {building.grid!r} in grids")
        problems += _duplicates(
            (f"{path}.units[{u}].number", unit.number) for u, unit in enumerate(building.units)
        )
        for u, unit in enumerate(building.units):
            problems += _duplicates(
                (f"{path}.units[{u}].rooms[{r}].room", room.room)
                for r, room in enumerate(unit.rooms)
            )
    return problems


@dataclass(frozen=True, slots=True)
class _Layout:
    """The placements a file defines, by (building, unit, room) key."""

    buildings: frozenset[tuple[str]]
    units: frozenset[tuple[str, str]]
    rooms: frozenset[tuple[str, str, str]]

    @classmethod
    def of(cls, document: CommunityDocument) -> _Layout:
        """Collect the placements of ``document``."""
        units = [(b, u) for b in document.buildings for u in b.units]
        return cls(
            buildings=frozenset((b.number,) for b in document.buildings),
            units=frozenset((b.number, u.number) for b, u in units),
            rooms=frozenset((b.number, u.number, r.room) for b, u in units for r in u.rooms),
        )


def _check_device(path: str, device: DeviceSpec, layout: _Layout) -> list[str]:
    kind = KINDS.get(device.kind)
    if kind is None:
        known = ", ".join(sorted(KINDS))
        return [f"{path}.kind: unknown kind {device.kind!r} (known: {known})"]
    try:
        attributes = kind.validate_attributes(device.attributes)
    except msgspec.ValidationError as exc:
        return [_attribute_problem(f"{path}.attributes", exc)]
    # Every point is tagged with kind.tag_keys, so each must have a value.
    missing = [
        tag
        for tag in kind.tag_keys
        if (getattr(device, tag) if tag in PLACEMENT_TAGS else attributes.get(tag)) is None
    ]
    return _check_placement(path, device, layout) + [
        _missing_tag(path, kind.name, tag) for tag in missing
    ]


def _missing_tag(path: str, kind: str, tag: str) -> str:
    if tag not in PLACEMENT_TAGS:
        return f"{path}.attributes.{tag}: a {kind} needs it"
    needed = " and ".join(PLACEMENT_TAGS[: PLACEMENT_TAGS.index(tag) + 1])
    return f"{path}.{tag}: a {kind} is placed at a {tag}: give its {needed}"


def _attribute_problem(path: str, exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `float`, got `str` - at `$.rated_power_w`": move the
    # location into the file path.
    message, _, location = str(exc).partition(" - at `$")
    return f"{path}{location.rstrip('`')}: {message}"


def _check_placement(path: str, device: DeviceSpec, layout: _Layout) -> list[str]:
    building, unit, room = device.building, device.unit, device.room
    if building is None:
        return []
    if (building,) not in layout.buildings:
        return [f"{path}.building: no building {building!r} in buildings"]
    if unit is not None and (building, unit) not in layout.units:
        return [f"{path}.unit: building {building!r} has no unit {unit!r}"]
    if unit is not None and room is not None and (building, unit, room) not in layout.rooms:
        return [f"{path}.room: no room {room!r} in building {building!r} unit {unit!r}"]
    return []


def _check_device_ids_free(session: Session, document: CommunityDocument) -> list[str]:
    paths = {device.id: f"devices[{i}].id" for i, device in enumerate(document.devices)}
    taken = session.execute(
        select(Device.device_id, Device.community_id).where(
            Device.device_id.in_(paths), Device.community_id != document.community.id
        )
    )
    return [
        f"{paths[device_id]}: {device_id!r} is already registered in community {community!r}"
        for device_id, community in taken
    ]


# --- storing: reconcile the community's rows with the file, by natural key --------


def _store(session: Session, document: CommunityDocument) -> dict[str, str]:
    """Reconcile; the grids renamed (old name: new name)."""
    community = _load_community(session, document.community.id)
    _update_community(community, document.community)
    old_grids = {grid.slug: grid for grid in community.grids}
    renamed = {
        old_grids[spec.id].name: spec.name
        for spec in document.grids
        if spec.id in old_grids and old_grids[spec.id].name != spec.name
    }
    community.grids = [_grid(old_grids.get(spec.id), spec) for spec in document.grids]
    grids = {grid.slug: grid for grid in community.grids}
    old_workers = {worker.phone: worker for worker in community.workers}
    community.workers = [
        _worker(old_workers.get(entry.person.phone), entry, grids) for entry in document.staff()
    ]
    old_buildings = {building.number: building for building in community.buildings}
    community.buildings = [
        _building(old_buildings.get(spec.number), spec, grids[spec.grid])
        for spec in document.buildings
    ]
    places = _Places.of(community.buildings)
    old_devices = {device.device_id: device for device in community.devices}
    community.devices = [
        _device(old_devices.get(spec.id), spec, places) for spec in document.devices
    ]
    return renamed


def _load_community(session: Session, community_id: str) -> Community:
    community = session.scalars(
        select(Community)
        .where(Community.id == community_id)
        .options(
            selectinload(Community.grids),
            selectinload(Community.workers),
            selectinload(Community.buildings).selectinload(Building.units).selectinload(Unit.rooms),
            selectinload(Community.devices),
        )
    ).one_or_none()
    if community is None:
        community = Community(id=community_id)
        session.add(community)
    return community


def _update_community(community: Community, spec: CommunitySpec) -> None:
    community.name = spec.name
    community.city = spec.city
    community.district = spec.district
    community.lat = spec.lat
    community.lon = spec.lon
    community.timezone = spec.timezone
    community.settings = spec.settings


def _grid(grid: Grid | None, spec: GridSpec) -> Grid:
    grid = grid or Grid(slug=spec.id)
    grid.name = spec.name
    return grid


def _worker(worker: GridWorker | None, entry: StaffEntry, grids: Mapping[str, Grid]) -> GridWorker:
    worker = worker or GridWorker(phone=entry.person.phone)
    worker.name = entry.person.name
    worker.role = entry.role
    worker.grid = None if entry.grid is None else grids[entry.grid]
    worker.on_duty = entry.person.on_duty
    worker.channels = entry.person.stored_channels()
    return worker


def _building(building: Building | None, spec: BuildingSpec, grid: Grid) -> Building:
    building = building or Building(number=spec.number)
    building.grid = grid
    building.lat = spec.lat
    building.lon = spec.lon
    building.floors = spec.floors
    old_units = {unit.number: unit for unit in building.units}
    building.units = [_unit(old_units.get(unit.number), unit) for unit in spec.units]
    return building


def _unit(unit: Unit | None, spec: UnitSpec) -> Unit:
    unit = unit or Unit(number=spec.number)
    unit.households = spec.households
    old_rooms = {household.room: household for household in unit.rooms}
    unit.rooms = [_household(old_rooms.get(room.room), room) for room in spec.rooms]
    return unit


def _household(household: Household | None, spec: HouseholdSpec) -> Household:
    household = household or Household(room=spec.room)
    household.care = spec.care.model_dump(exclude_none=True)
    household.resident_name, household.resident_phone = _name_and_phone(spec.resident)
    household.contact_name, household.contact_phone = _name_and_phone(spec.emergency_contact)
    return household


def _name_and_phone(contact: ContactSpec | None) -> tuple[str | None, str | None]:
    return (None, None) if contact is None else (contact.name, contact.phone)


@dataclass(frozen=True, slots=True)
class _Places:
    """The community's stored buildings, units and households, by their keys in the file."""

    buildings: Mapping[str, Building]
    units: Mapping[tuple[str, str], Unit]
    households: Mapping[tuple[str, str, str], Household]

    @classmethod
    def of(cls, buildings: list[Building]) -> _Places:
        """Index ``buildings`` and everything in them."""
        units = [(b, u) for b in buildings for u in b.units]
        return cls(
            buildings={b.number: b for b in buildings},
            units={(b.number, u.number): u for b, u in units},
            households={(b.number, u.number, h.room): h for b, u in units for h in u.rooms},
        )


def _device(device: Device | None, spec: DeviceSpec, places: _Places) -> Device:
    device = device or Device(device_id=spec.id)
    device.kind = spec.kind
    device.attributes = KINDS[spec.kind].validate_attributes(spec.attributes)
    device.lat = spec.lat
    device.lon = spec.lon
    device.place = spec.place
    building, unit, room = spec.building, spec.unit, spec.room
    device.building = None if building is None else places.buildings[building]
    device.unit = None if building is None or unit is None else places.units[building, unit]
    device.household = (
        None
        if building is None or unit is None or room is None
        else places.households[building, unit, room]
    )
    return device
