"""The community file format (YAML), as pydantic models; see registry/README.md.

This is an edge: the models refuse unknown keys and out-of-range values, and
every problem is reported with its path in the file, e.g.
``buildings[2].units[0].households: Input should be greater than or equal to 0``.
Numbers people write unquoted (building 3, room 501, phone 13800001001) are
taken as text.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from devices.contract import COMMUNITY_RE, DEVICE_ID_RE
from registry.models import DEFAULT_TIMEZONE, ROLE_GRID_WORKER, ROLE_MANAGER

MAX_PROBLEMS_SHOWN = 20


class RegistryImportError(ValueError):
    """A community file that cannot be imported; ``problems`` name each path in the file."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(_describe(source, self.problems))


def _describe(source: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    shown = problems[:MAX_PROBLEMS_SHOWN]
    more = len(problems) - len(shown)
    lines = [f"{source}: {len(problems)} problems:", *(f"  {p}" for p in shown)]
    return "\n".join([*lines, f"  ... and {more} more"] if more else lines)


def _as_text(value: Any) -> Any:
    # bool is an int too, but "yes" as a room number is a mistake, not a number.
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Label = Annotated[
    str, BeforeValidator(_as_text), StringConstraints(pattern=r"^[0-9A-Za-z-]{1,16}$")
]
Phone = Annotated[
    str, BeforeValidator(_as_text), StringConstraints(pattern=r"^\+?[0-9][0-9 -]{2,30}$")
]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,32}$")]
Url = Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+\S*$", max_length=2048)]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Hours = Annotated[float, Field(gt=0, le=24 * 31)]


class Spec(BaseModel):
    """Base of every part of the file: unknown keys are typos, not extensions."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CommunitySpec(Spec):
    """``community:`` the community itself."""

    id: Annotated[str, StringConstraints(pattern=COMMUNITY_RE.pattern)]
    name: Text
    city: Text | None = None
    district: Text | None = None
    lat: Latitude
    lon: Longitude
    timezone: str = DEFAULT_TIMEZONE
    settings: dict[str, Any] = {}

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (expected e.g. Asia/Shanghai)") from None
        return value


class WecomChannel(Spec):
    """企业微信 group robot webhook."""

    type: Literal["wecom"]
    url: Url


class DingtalkChannel(Spec):
    """钉钉 robot webhook; ``secret`` signs each message when the robot asks for it."""

    type: Literal["dingtalk"]
    url: Url
    secret: Secret | None = None


class WebhookChannel(Spec):
    """A generic JSON webhook; ``secret`` signs the body."""

    type: Literal["webhook"]
    url: Url
    secret: Secret | None = None


class SmsChannel(Spec):
    """An SMS gateway webhook; ``phone`` defaults to the worker's own."""

    type: Literal["sms"]
    url: Url
    phone: Phone | None = None


Channel = Annotated[
    WecomChannel | DingtalkChannel | WebhookChannel | SmsChannel, Field(discriminator="type")
]


class PersonSpec(Spec):
    """A person alerts go to; ``phone`` identifies them within the community."""

    name: Text
    phone: Phone
    on_duty: bool = True
    channels: list[Channel] = []

    def stored_channels(self) -> list[dict[str, Any]]:
        """The channels as stored, an SMS channel's phone filled in."""
        stored = [channel.model_dump(exclude_none=True) for channel in self.channels]
        for channel in stored:
            if channel["type"] == "sms":
                channel.setdefault("phone", self.phone)
        return stored


class WorkerSpec(PersonSpec):
    """A grid worker (网格员); ``role: manager`` if they also get the escalations."""

    role: Literal["grid_worker", "manager"] = ROLE_GRID_WORKER


class GridSpec(Spec):
    """A grid (网格) and its workers; buildings name their grid."""

    id: Slug
    name: Text
    workers: list[WorkerSpec] = []


class ContactSpec(Spec):
    """A person to reach: the resident, or their emergency contact."""

    name: Text
    phone: Phone | None = None


class CareSpec(Spec):
    """A household's care profile; unset thresholds fall back to the community's."""

    watched: bool = True
    no_use_hours: Hours | None = None
    continuous_flow_hours: Hours | None = None


class HouseholdSpec(Spec):
    """A registered household (户) behind a unit door, e.g. a watched elderly resident's."""

    room: Label
    resident: ContactSpec | None = None
    emergency_contact: ContactSpec | None = None
    care: CareSpec = CareSpec()


class UnitSpec(Spec):
    """A unit (单元): ``households`` homes behind its door, of which ``rooms`` are registered."""

    number: Label
    households: Annotated[int, Field(ge=0, le=10_000)]
    rooms: list[HouseholdSpec] = []

    @model_validator(mode="after")
    def _rooms_fit(self) -> UnitSpec:
        if len(self.rooms) > self.households:
            raise ValueError(f"{len(self.rooms)} rooms listed but households is {self.households}")
        return self


class BuildingSpec(Spec):
    """A building (楼), its grid and its units."""

    number: Label
    grid: Slug
    lat: Latitude
    lon: Longitude
    floors: Annotated[int, Field(ge=1, le=200)] | None = None
    units: list[UnitSpec] = []


class DeviceSpec(Spec):
    """A device and its placement: a unit (doors), a room (meters) or a position."""

    id: Annotated[str, StringConstraints(pattern=DEVICE_ID_RE.pattern)]
    kind: str
    building: Label | None = None
    unit: Label | None = None
    room: Label | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None
    place: Annotated[str, StringConstraints(strip_whitespace=True, max_length=128)] | None = None
    attributes: dict[str, Any] = {}

    @model_validator(mode="after")
    def _placement_complete(self) -> DeviceSpec:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        if self.room is not None and self.unit is None:
            raise ValueError("a room needs its unit")
        if self.unit is not None and self.building is None:
            raise ValueError("a unit needs its building")
        return self


class CommunityDocument(Spec):
    """A whole community file: importing it replaces that community's content."""

    community: CommunitySpec
    managers: list[PersonSpec] = []
    grids: Annotated[list[GridSpec], Field(min_length=1)]
    buildings: list[BuildingSpec] = []
    devices: list[DeviceSpec] = []

    def staff(self) -> list[StaffEntry]:
        """Every person alerts go to: managers first, then each grid's workers."""
        managers = [
            StaffEntry(f"managers[{i}]", person, ROLE_MANAGER, None)
            for i, person in enumerate(self.managers)
        ]
        grid_workers = [
            StaffEntry(f"grids[{g}].workers[{w}]", worker, worker.role, grid.id)
            for g, grid in enumerate(self.grids)
            for w, worker in enumerate(grid.workers)
        ]
        return managers + grid_workers


class StaffEntry(NamedTuple):
    """A person in the file, with where they are listed, their role and their grid."""

    path: str
    person: PersonSpec
    role: str
    grid: str | None


def parse_document(source: str, data: Any) -> CommunityDocument:
    """Validate ``data`` as a community file; raise ``RegistryImportError`` naming each problem."""
    try:
        return CommunityDocument.model_validate(data)
    except ValidationError as exc:
        problems = [_pydantic_problem(error) for error in exc.errors(include_url=False)]
        raise RegistryImportError(source, problems) from None


def _pydantic_problem(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    value = error.get("input")
    if error["type"] != "missing" and isinstance(value, str | int | float | bool):
        message += f" (got {value!r:.60})"
    return f"{_format_path(error['loc'])}: {message}"


def _format_path(loc: Sequence[int | str]) -> str:
    """``("devices", 3, "kind")`` → ``devices[3].kind``; the empty path is the whole file."""
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return path.lstrip(".") or "(file)"


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            # A merge key (<<) may repeat keys on purpose; non-scalar keys cannot be compared.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"key {key!r} given twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> Any:
    """Read a YAML file; raise ``RegistryImportError`` saying where it is malformed."""
    try:
        with path.open(encoding="utf-8") as stream:
            return yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise RegistryImportError(str(path), [f"not valid YAML: {exc}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryImportError(str(path), [f"cannot read the file: {exc}"]) from None
