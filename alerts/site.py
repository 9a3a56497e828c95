"""A community as the rules see it: its time zone, its sun, and its alert settings.

Sun times come from ``astral`` for the community's coordinates and the *local*
calendar date in its time zone: asked for a UTC date, astral answers with the
wrong day's sunrise east of Greenwich (8 hours off in 淄博).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import sunrise, sunset

from devices.contract import Community

DAY_MS = 86_400_000


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class SunDay:
    """One local calendar day: where it starts and ends, and its sunrise and sunset (ms)."""

    start_ms: int
    end_ms: int
    sunrise_ms: int
    sunset_ms: int


class SunCalendar:
    """Sunrise and sunset for a place, by local day; the last day asked for is kept."""

    def __init__(self, lat: float, lon: float, tz: ZoneInfo) -> None:
        self._observer = Observer(latitude=lat, longitude=lon)
        self._tz = tz
        self._day = SunDay(0, 0, 0, 0)

    def day(self, ts_ms: int) -> SunDay:
        """The local day holding ``ts_ms``."""
        if not self._day.start_ms <= ts_ms < self._day.end_ms:
            local = datetime.fromtimestamp(ts_ms / 1000, self._tz).date()
            self._day = self._compute(local)
        return self._day

    def _compute(self, local: date) -> SunDay:
        start = datetime.combine(local, time(), self._tz)
        end = datetime.combine(local + timedelta(days=1), time(), self._tz)
        rise = sunrise(self._observer, local, tzinfo=self._tz)
        dusk = sunset(self._observer, local, tzinfo=self._tz)
        return SunDay(_ms(start), _ms(end), _ms(rise), _ms(dusk))

    def is_dark(self, ts_ms: int, margin_ms: int = 0) -> bool:
        """Clearly night: more than ``margin_ms`` after sunset or before sunrise."""
        day = self.day(ts_ms)
        return ts_ms < day.sunrise_ms - margin_ms or ts_ms >= day.sunset_ms + margin_ms


@dataclass(frozen=True)
class Site:
    """A community, its time zone and sun, and the ``alerts`` section of its settings."""

    community: Community
    settings: Mapping[str, Any] = field(default_factory=dict)
    tz: ZoneInfo = field(init=False)
    sun: SunCalendar = field(init=False)

    def __post_init__(self) -> None:
        tz = ZoneInfo(self.community.timezone)
        object.__setattr__(self, "tz", tz)
        object.__setattr__(self, "sun", SunCalendar(self.community.lat, self.community.lon, tz))

    @property
    def id(self) -> str:
        """The community's id (slug)."""
        return self.community.id

    def local(self, ts_ms: int) -> datetime:
        """``ts_ms`` as a local, zoned datetime."""
        return datetime.fromtimestamp(ts_ms / 1000, self.tz)

    def next_local_time(self, after_ms: int, hhmm: str) -> int:
        """The first moment strictly after ``after_ms`` when the local clock reads ``hhmm``."""
        hour, minute = (int(part) for part in hhmm.split(":"))
        day = self.local(after_ms).date()
        while True:
            moment = _ms(datetime.combine(day, time(hour, minute), self.tz))
            if moment > after_ms:
                return moment
            day += timedelta(days=1)

    def overrides(self, rule_id: str) -> Mapping[str, Any]:
        """The community's overrides of one rule's parameters (may be empty)."""
        value = self.settings.get(rule_id, {})
        return value if isinstance(value, Mapping) else {}


def minutes_of_day(hhmm: str) -> int:
    """``"22:30"`` → 1350."""
    hour, minute = (int(part) for part in hhmm.split(":"))
    return hour * 60 + minute


def in_daily_window(local: datetime, start: str, end: str) -> bool:
    """Whether a local time lies in ``[start, end)``, a window that may span midnight."""
    now = local.hour * 60 + local.minute
    lo, hi = minutes_of_day(start), minutes_of_day(end)
    return lo <= now < hi if lo <= hi else now >= lo or now < hi


M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON_EQUATOR = 111_320.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Ground distance in metres; the flat-earth approximation is exact enough within a town."""
    mean_lat = math.radians((lat1 + lat2) / 2)
    dx = (lon2 - lon1) * M_PER_DEG_LON_EQUATOR * math.cos(mean_lat)
    dy = (lat2 - lat1) * M_PER_DEG_LAT
    return math.hypot(dx, dy)
