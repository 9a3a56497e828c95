"""Times in scenario files: durations, and moments relative to the start of a run.

A moment is written one of three ways, each resolved against the run's start
in the community's time zone:

- ``+2h30m``: an offset from the start;
- ``02:10``: the first time at or after the start that the local clock reads 02:10;
- ``sunrise+30m``, ``sunset``, ``sunset-15m``: the first sunrise (sunset) at or
  after the start, at the community's latitude and longitude, plus or minus a
  duration.

A duration is ``<n>d<n>h<n>m<n>s`` with any of the parts, in that order: ``90s``,
``15m``, ``1h30m``, ``2d``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from devices.contract import Community
from devices.simulation import next_local_time
from devices.streetlight.simulate import sun_times

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_SUN = re.compile(r"^(sunrise|sunset)(?:([+-])(\w+))?$")
MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000}


def parse_duration(text: str) -> int:
    """``1h30m`` → milliseconds; ValueError naming the format otherwise."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 1h30m or 2d")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return days * MS["d"] + hours * MS["h"] + minutes * MS["m"] + seconds * MS["s"]


@dataclass(frozen=True, slots=True)
class Moment:
    """A moment of a scenario: ``anchor`` (start, a clock time, sunrise, sunset) plus an offset."""

    text: str
    anchor: str  # "start", "HH:MM", "sunrise" or "sunset"
    offset_ms: int = 0

    @classmethod
    def parse(cls, text: str) -> Moment:
        """Read ``+2h``, ``02:10`` or ``sunset-15m``; ValueError naming the forms otherwise."""
        raw = text.strip()
        if raw.startswith("+"):
            return cls(raw, "start", parse_duration(raw[1:]))
        if _CLOCK.match(raw):
            return cls(raw, raw)
        sun = _SUN.match(raw)
        if sun is not None:
            event, sign, amount = sun.groups()
            offset = parse_duration(amount) if amount else 0
            return cls(raw, event, -offset if sign == "-" else offset)
        raise ValueError(f"{text!r} is not a moment like +2h30m, 02:10 or sunrise+30m")

    def resolve(self, start_ms: int, community: Community) -> int:
        """The moment in ms since the epoch, for a run that starts at ``start_ms``."""
        if self.anchor == "start":
            return start_ms + self.offset_ms
        if self.anchor in ("sunrise", "sunset"):
            return first_sun_event(start_ms, community, self.anchor) + self.offset_ms
        # next_local_time is strictly after; a clock time equal to the start counts too.
        return next_local_time(start_ms - 1, self.anchor, community.timezone)

    def __str__(self) -> str:
        return self.text


def first_sun_event(start_ms: int, community: Community, event: str) -> int:
    """The first sunrise or sunset at or after ``start_ms`` at the community."""
    index = 0 if event == "sunrise" else 1
    day = local_date(start_ms, community)
    for days in range(-1, 3):
        ts = sun_times(community.lat, community.lon, day + timedelta(days=days), community.timezone)
        if ts[index] >= start_ms:
            return ts[index]
    raise ValueError(f"no {event} within two days of the start at {community.id}")


def local_date(ts: int, community: Community) -> date:
    """The community's local calendar date at ``ts``."""
    return datetime.fromtimestamp(ts / 1000, ZoneInfo(community.timezone)).date()
