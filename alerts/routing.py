"""Who hears of an alert: device → building → grid → the grid's workers on duty, by their channels.

A door or a meter names its building. A lamp, a robot or a scene spot has only
a position: it belongs to the grid of the nearest building. A grid with nobody
on duty falls back to the community's managers, who also get the escalations.
Every transition also goes to the control room on MQTT (``sc/{community}/alerts``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.site import distance_m
from registry.models import ROLE_MANAGER, Building, Community, Grid, GridWorker

log = logging.getLogger("gridwatch.alerts")

MQTT = "mqtt"


def control_room_topic(community: str) -> str:
    """The MQTT topic control-room screens subscribe to."""
    return f"sc/{community}/alerts"


@dataclass(frozen=True, slots=True)
class Recipient:
    """One person's one channel (``config`` is the registry's channel entry)."""

    name: str
    config: Mapping[str, Any]

    @property
    def channel(self) -> str:
        """wecom, dingtalk, webhook, sms or mqtt."""
        return str(self.config["type"])

    @property
    def target(self) -> str:
        """What identifies the destination: the webhook URL, the phone, the topic."""
        if self.channel == "sms":
            return str(self.config["phone"])
        return str(self.config.get("topic") or self.config["url"])


@dataclass(frozen=True, slots=True)
class _Building:
    number: str
    grid: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class _Person:
    name: str
    grid: str | None
    manager: bool
    on_duty: bool
    channels: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class CommunityBook:
    """A community's name, time zone, buildings, grids and staff, loaded in one go."""

    id: str
    name: str
    tz: ZoneInfo
    buildings: Mapping[str, _Building]
    grid_names: Mapping[str, str]
    people: tuple[_Person, ...]

    def nearest_building(self, lat: float, lon: float) -> _Building | None:
        """The building closest to a position."""
        return min(
            self.buildings.values(),
            key=lambda b: distance_m(b.lat, b.lon, lat, lon),
            default=None,
        )

    def grid_workers(self, grid: str) -> list[Recipient]:
        """Everyone on duty in ``grid``, one entry per channel."""
        return _channels(p for p in self.people if p.on_duty and p.grid == grid)

    def managers(self) -> list[Recipient]:
        """The community's managers on duty, one entry per channel."""
        return _channels(p for p in self.people if p.on_duty and p.manager)

    def control_room(self) -> Recipient:
        """The control room's MQTT topic."""
        return Recipient("监控室", {"type": MQTT, "topic": control_room_topic(self.id)})


def _channels(people: Any) -> list[Recipient]:
    return [Recipient(p.name, channel) for p in people for channel in p.channels]


@dataclass(frozen=True, slots=True)
class Route:
    """Where an alert goes: its grid, a hint for the place, and the people."""

    grid: str | None
    near: str  # "5号楼附近" for things placed by position only
    recipients: list[Recipient]


class Router:
    """Routes alerts from the registry; communities are cached until ``invalidate``."""

    def __init__(self) -> None:
        self._books: dict[str, CommunityBook] = {}

    def invalidate(self) -> None:
        """Forget what was loaded (the registry changed)."""
        self._books.clear()

    def book(self, session: Session, community: str) -> CommunityBook:
        """The community's book, loaded on first use."""
        book = self._books.get(community)
        if book is None:
            book = _load(session, community)
            self._books[community] = book
        return book

    def route(
        self,
        session: Session,
        community: str,
        building: str | None,
        lat: float | None,
        lon: float | None,
    ) -> Route:
        """The grid workers on duty for something in ``building`` or at ``lat``/``lon``."""
        book = self.book(session, community)
        near = ""
        placed = book.buildings.get(building) if building is not None else None
        if placed is None and lat is not None and lon is not None:
            placed = book.nearest_building(lat, lon)
            near = f"{placed.number}号楼附近" if placed else ""
        if placed is None:
            return Route(None, near, book.managers())
        recipients = book.grid_workers(placed.grid)
        if not recipients:
            log.warning(
                "%s: nobody on duty in grid %s; telling the managers", community, placed.grid
            )
            recipients = book.managers()
        return Route(book.grid_names.get(placed.grid), near, recipients)


def _load(session: Session, community: str) -> CommunityBook:
    row = session.execute(
        select(Community.name, Community.timezone).where(Community.id == community)
    ).one()
    grids = {
        grid_id: (slug, name)
        for grid_id, slug, name in session.execute(
            select(Grid.id, Grid.slug, Grid.name).where(Grid.community_id == community)
        )
    }
    buildings = {
        number: _Building(number, grids[grid_id][0], lat, lon)
        for number, grid_id, lat, lon in session.execute(
            select(Building.number, Building.grid_id, Building.lat, Building.lon).where(
                Building.community_id == community
            )
        )
    }
    people = tuple(
        _Person(
            worker.name,
            grids[worker.grid_id][0] if worker.grid_id is not None else None,
            worker.role == ROLE_MANAGER,
            worker.on_duty,
            tuple(worker.channels),
        )
        for worker in session.scalars(
            select(GridWorker).where(GridWorker.community_id == community).order_by(GridWorker.id)
        )
    )
    return CommunityBook(
        id=community,
        name=row.name,
        tz=ZoneInfo(row.timezone),
        buildings=buildings,
        grid_names={slug: name for slug, name in grids.values()},
        people=people,
    )
