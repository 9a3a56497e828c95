"""Generate the demo community 张家新村 (zjxc) as a community file.

    python -m registry.demo.generate > registry/demo/zjxc.yaml

Deterministic: the same code always writes the same file (a test checks that
the shipped file is up to date). The community is sized as the published one
(PRODUCT.md): 112 unit doors, 169 street lamps on 6 circuits, 60 watched
elderly households with a water meter each, one night patrol robot.

Layout, in metres east (x) and north (y) of the centre: 37 slab buildings in 10
rows 30 m apart and 4 columns, a ring road round them (x = ±190, y = ±165),
three north-south roads between the columns (x = -80, 0, 80); three slots are
not housing: the property service centre (robot dock) and the central square.
Phones are fake (138 0000 xxxx) and every notification URL points at port 9 on
the loopback (discard): the demo never reaches anyone.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

SEED = 20241122
CENTRE_LAT, CENTRE_LON = 36.8131, 118.0549
M_PER_DEG_LAT = 111_320.0
PLACEHOLDER = "http://127.0.0.1:9"

COLUMN_X = (-120.0, -40.0, 40.0, 120.0)
COLUMN_UNITS = (3, 4, 2, 3)  # slab length follows the column's plot
ROW_Y = tuple(-135.0 + 30.0 * row for row in range(10))
UNIT_WIDTH_M = 14.0
DOOR_SETBACK_M = 6.0  # doors open on the south face
DOCK_SLOT = (0, 2)  # (row, column) of the property service centre
SQUARE_SLOTS = ((4, 1), (4, 2))

RING_X, RING_Y = 190.0, 165.0
Segment = tuple[tuple[float, float], tuple[float, float]]
# circuit: (roads it lights, lamps, rated power W)
CIRCUITS: dict[str, tuple[tuple[Segment, ...], int, int]] = {
    "A": ((((-RING_X, -RING_Y), (RING_X, -RING_Y)),), 28, 100),  # south ring road, main gate
    "B": ((((RING_X, -RING_Y), (RING_X, RING_Y)),), 26, 80),  # east ring road
    "C": ((((RING_X, RING_Y), (-RING_X, RING_Y)),), 28, 100),  # north ring road
    "D": ((((-RING_X, RING_Y), (-RING_X, -RING_Y)),), 26, 80),  # west ring road
    "E": ((((0.0, -RING_Y), (0.0, RING_Y)),), 26, 80),  # central road
    "F": ((((-80.0, -RING_Y), (-80.0, RING_Y)), ((80.0, RING_Y), (80.0, -RING_Y))), 35, 60),
}
# The night route: round the ring, then back through the square to the dock.
CHECKPOINTS = (
    (0.0, -RING_Y),
    (RING_X, -RING_Y),
    (RING_X, 0.0),
    (RING_X, RING_Y),
    (0.0, RING_Y),
    (-RING_X, RING_Y),
    (-RING_X, 0.0),
    (-RING_X, -RING_Y),
    (-80.0, -15.0),
    (0.0, -15.0),
    (80.0, -15.0),
    (40.0, -150.0),
)

GRIDS = (("g1", "第一网格"), ("g2", "第二网格"), ("g3", "第三网格"), ("g4", "第四网格"))
WORKERS = {
    "g1": ("李秀梅", "王建军"),
    "g2": ("张丽娜",),
    "g3": ("刘洪涛", "陈静"),
    "g4": ("赵磊",),
}
MANAGER = "孙志刚"
WATCHED_HOUSEHOLDS = 60
SURNAMES = "王李张刘陈杨赵黄周吴孙马朱胡郭"
ELDER_NAMES = ("秀英", "桂英", "玉兰", "淑珍", "凤英", "建国", "德明", "福生", "桂兰", "振华")
CHILD_NAMES = ("伟", "敏", "静", "磊", "军", "燕", "勇", "艳", "杰", "娟")


def to_lat_lon(x: float, y: float) -> tuple[float, float]:
    """Local metres east/north of the centre → (lat, lon), flat earth, to ~0.1 m."""
    lat = CENTRE_LAT + y / M_PER_DEG_LAT
    lon = CENTRE_LON + x / (M_PER_DEG_LAT * math.cos(math.radians(CENTRE_LAT)))
    return round(lat, 6), round(lon, 6)


def position(x: float, y: float) -> dict[str, float]:
    """``lat``/``lon`` keys of a point given in local metres."""
    lat, lon = to_lat_lon(x, y)
    return {"lat": lat, "lon": lon}


class Inline(dict[str, Any]):
    """A mapping written on one line: a device, a channel, a contact."""


@dataclass(frozen=True)
class Slab:
    """A housing building: its number, plot and size."""

    number: int
    x: float
    y: float
    units: int
    floors: int

    @property
    def grid(self) -> str:
        """Grids are the quadrants: g1 south-west, g2 south-east, g3 north-west, g4 north-east."""
        return GRIDS[(self.y > 0) * 2 + (self.x > 0)][0]

    def door_xy(self, unit: int) -> tuple[float, float]:
        """Where unit ``unit``'s door is, along the south face."""
        west_end = self.x - self.units * UNIT_WIDTH_M / 2
        return west_end + (unit - 0.5) * UNIT_WIDTH_M, self.y - DOOR_SETBACK_M


def slabs(rng: random.Random) -> list[Slab]:
    """The housing buildings, numbered row by row from the south-west."""
    plots = [
        (row, column)
        for row in range(len(ROW_Y))
        for column in range(len(COLUMN_X))
        if (row, column) != DOCK_SLOT and (row, column) not in SQUARE_SLOTS
    ]
    return [
        Slab(n, COLUMN_X[c], ROW_Y[r], COLUMN_UNITS[c], rng.choice((5, 6, 6)))
        for n, (r, c) in enumerate(plots, start=1)
    ]


def phone(n: int) -> str:
    """A fake mobile number."""
    return f"1380000{n:04d}"


def channels(key: str, index: int, person_phone: str) -> list[Inline]:
    """Alternate the channel types so the demo exercises each."""
    if index % 2 == 0:
        return [
            Inline(type="wecom", url=f"{PLACEHOLDER}/wecom/{key}"),
            Inline(type="sms", url=f"{PLACEHOLDER}/sms", phone=person_phone),
        ]
    return [
        Inline(type="dingtalk", url=f"{PLACEHOLDER}/dingtalk/{key}", secret=f"demo-{key}"),
        Inline(type="webhook", url=f"{PLACEHOLDER}/webhook/{key}", secret=f"demo-{key}"),
    ]


def person(name: str, n: int, group: str) -> dict[str, Any]:
    """Grid worker or manager number ``n``, with a fake phone and placeholder channels."""
    number = phone(1000 + n)
    return {"name": name, "phone": number, "channels": channels(f"{group}-{n}", n, number)}


def grids() -> list[dict[str, Any]]:
    """The four grids, each with its workers."""
    numbers = itertools.count(1)
    return [
        {
            "id": slug,
            "name": name,
            "workers": [person(worker, next(numbers), slug) for worker in WORKERS[slug]],
        }
        for slug, name in GRIDS
    ]


def watched_rooms(rng: random.Random, buildings: list[Slab]) -> set[tuple[int, int, str]]:
    """Pick the watched households: (building, unit, room) at random among all homes."""
    homes = [
        (slab.number, unit, f"{floor}0{door}")
        for slab in buildings
        for unit in range(1, slab.units + 1)
        for floor in range(1, slab.floors + 1)
        for door in (1, 2)
    ]
    return set(rng.sample(homes, WATCHED_HOUSEHOLDS))


def household(rng: random.Random, n: int, room: str) -> dict[str, Any]:
    """A watched elderly resident's household, with an emergency contact (a child)."""
    surname = rng.choice(SURNAMES)
    return {
        "room": room,
        "resident": Inline(name=surname + rng.choice(ELDER_NAMES), phone=phone(2000 + n)),
        "emergency_contact": Inline(name=surname + rng.choice(CHILD_NAMES), phone=phone(3000 + n)),
        "care": Inline(watched=True, no_use_hours=rng.choice((12, 12, 12, 8, 24))),
    }


def buildings(
    rng: random.Random, housing: list[Slab], watched: set[tuple[int, int, str]]
) -> list[dict[str, Any]]:
    """The buildings with their units and watched households."""
    numbered = iter(range(1, WATCHED_HOUSEHOLDS + 1))
    result = []
    for slab in housing:
        units = []
        for unit in range(1, slab.units + 1):
            rooms = sorted(room for b, u, room in watched if (b, u) == (slab.number, unit))
            entry: dict[str, Any] = {"number": str(unit), "households": slab.floors * 2}
            if rooms:
                entry["rooms"] = [household(rng, next(numbered), room) for room in rooms]
            units.append(entry if rooms else Inline(entry))
        result.append(
            {
                "number": str(slab.number),
                "grid": slab.grid,
                **position(slab.x, slab.y),
                "floors": slab.floors,
                "units": units,
            }
        )
    return result


def doors(housing: list[Slab]) -> Iterator[Inline]:
    """One smart door per unit, on the building's south face."""
    for slab in housing:
        for unit in range(1, slab.units + 1):
            yield Inline(
                id=f"zjxc-door-b{slab.number:02d}-u{unit}",
                kind="door",
                building=str(slab.number),
                unit=str(unit),
                **position(*slab.door_xy(unit)),
            )


def water_meters(watched: set[tuple[int, int, str]]) -> Iterator[Inline]:
    """One meter per watched household; it is where its building is."""
    for b, u, room in sorted(watched):
        yield Inline(
            id=f"zjxc-wm-b{b:02d}-u{u}-{room}",
            kind="water_meter",
            building=str(b),
            unit=str(u),
            room=room,
        )


def along(segments: tuple[Segment, ...], count: int) -> Iterator[tuple[float, float]]:
    """``count`` points evenly spaced along the segments, none at a corner."""
    lengths = [math.dist(a, b) for a, b in segments]
    step = sum(lengths) / count
    for k in range(count):
        distance = (k + 0.5) * step
        for (a, b), length in zip(segments, lengths, strict=True):
            if distance <= length:
                t = distance / length
                yield a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])
                break
            distance -= length


def lamps() -> Iterator[Inline]:
    """The street lamps, numbered along each circuit."""
    for circuit, (roads, count, rated_w) in CIRCUITS.items():
        for n, (x, y) in enumerate(along(roads, count), start=1):
            yield Inline(
                id=f"zjxc-lamp-{circuit.lower()}{n:03d}",
                kind="streetlight",
                **position(x, y),
                place=f"{circuit}回路 {n}号灯",
                attributes=Inline(circuit=circuit, rated_power_w=rated_w),
            )


def robot() -> dict[str, Any]:
    """The night patrol robot, docked at the property service centre."""
    dock = position(COLUMN_X[DOCK_SLOT[1]], ROW_Y[DOCK_SLOT[0]])
    checkpoints = [
        Inline(id=f"cp-{n:02d}", **position(x, y)) for n, (x, y) in enumerate(CHECKPOINTS, 1)
    ]
    return {
        "id": "zjxc-robot-1",
        "kind": "patrol_robot",
        **dock,
        "place": "巡逻车 1号",
        "attributes": {
            "dock_lat": dock["lat"],
            "dock_lon": dock["lon"],
            "routes": [
                {"id": "night-a", "start": "22:00", "end": "05:30", "checkpoints": checkpoints}
            ],
        },
    }


def document() -> dict[str, Any]:
    """The whole community file, as Python objects."""
    rng = random.Random(SEED)  # noqa: S311 (a fixed layout, not a secret)
    housing = slabs(rng)
    watched = watched_rooms(rng, housing)
    return {
        "community": {
            "id": "zjxc",
            "name": "张家新村",
            "city": "淄博市",
            "district": "临淄区",
            "lat": CENTRE_LAT,
            "lon": CENTRE_LON,
            "timezone": "Asia/Shanghai",
            "settings": {},
        },
        "managers": [person(MANAGER, 0, "manager")],
        "grids": grids(),
        "buildings": buildings(rng, housing, watched),
        "devices": [*doors(housing), *lamps(), *water_meters(watched), robot()],
    }


class _Dumper(yaml.SafeDumper):
    """Indents block lists under their key, which reads better in a long file."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, indentless=False)


def _inline(dumper: yaml.SafeDumper, data: Inline) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)


_Dumper.add_representer(Inline, _inline)

HEADER = """\
# 张家新村 (zjxc), the demo community: see registry/README.md for the format.
# Generated by `python -m registry.demo.generate > registry/demo/zjxc.yaml`: edit the generator.
"""


def render() -> str:
    """The community file's text."""
    body = yaml.dump(document(), Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=200)
    return HEADER + body


def main() -> None:
    """Write the demo community file to standard output, as UTF-8."""
    sys.stdout.buffer.write(render().encode("utf-8"))


if __name__ == "__main__":
    main()
