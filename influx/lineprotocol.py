"""Line-protocol encoding (InfluxDB 1.x, 2.x and 3.x all read it), ms precision.

Escaping follows the line-protocol reference: measurement escapes comma and
space; tag keys, tag values and field keys escape comma, equals sign and space;
string field values escape double quote and backslash. What line protocol
cannot carry at all (a newline in a name or tag, an empty tag value, a tag or
key ending in a backslash, NaN or infinity) raises ``UnencodableError`` instead
of producing a line that would corrupt the batch around it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

FieldValue = bool | int | float | str

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING_ESCAPES = str.maketrans({'"': r"\"", "\\": r"\\"})
_LINE_BREAKS = ("\n", "\r")
# Most names and tag values are plain ids: one regex test lets them skip escaping.
_KEY_SPECIALS = re.compile(r"[,= \\\r\n]")
_MEASUREMENT_SPECIALS = re.compile(r"[, \\\r\n]")
_STRING_SPECIALS = re.compile(r'["\\]')


class UnencodableError(ValueError):
    """A value line protocol cannot represent; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Point:
    """One point: measurement, tags, fields and a timestamp in ms since the epoch."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ms: int


def _check_name(kind: str, value: str) -> None:
    if not value:
        raise UnencodableError(f"empty {kind}")
    if any(c in value for c in _LINE_BREAKS):
        raise UnencodableError(f"{kind} contains a line break: {value!r}")
    if value.endswith("\\"):
        raise UnencodableError(f"{kind} ends with a backslash: {value!r}")


def escape_measurement(name: str) -> str:
    """Escape a measurement name."""
    if name.startswith("#"):  # the line would be a comment, and the point silently gone
        raise UnencodableError(f"measurement starts with '#': {name!r}")
    if name and _MEASUREMENT_SPECIALS.search(name) is None:
        return name
    _check_name("measurement", name)
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(key: str, kind: str = "key") -> str:
    """Escape a tag key, tag value or field key."""
    if key and _KEY_SPECIALS.search(key) is None:
        return key
    _check_name(kind, key)
    return key.translate(_KEY_ESCAPES)


def encode_tags(tags: Mapping[str, str]) -> str:
    """The ``,k=v,k=v`` tag segment, keys sorted as InfluxDB prefers."""
    return _encode_sorted_tags(tuple(sorted(tags.items())))


# A device's tag set recurs in every point it sends: encode each set once.
@lru_cache(maxsize=1 << 17)
def _encode_sorted_tags(items: tuple[tuple[str, str], ...]) -> str:
    return "".join(f",{escape_key(k, 'tag key')}={escape_key(v, 'tag value')}" for k, v in items)


def encode_field_value(value: FieldValue) -> str:
    """One field value: ``true``, ``12i``, ``1.5`` or a quoted string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise UnencodableError(f"integer out of int64 range: {value}")
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnencodableError(f"non-finite float: {value}")
        return repr(value)
    if isinstance(value, str):
        if _STRING_SPECIALS.search(value) is None:
            return f'"{value}"'
        return f'"{value.translate(_STRING_ESCAPES)}"'
    raise UnencodableError(f"unsupported field type {type(value).__name__}")


def encode_fields(fields: Mapping[str, FieldValue]) -> str:
    """The ``k=v,k=v`` field segment; at least one field is required."""
    if not fields:
        raise UnencodableError("a point needs at least one field")
    return ",".join(
        f"{escape_key(k, 'field key')}={encode_field_value(v)}" for k, v in fields.items()
    )


def encode_point(point: Point) -> str:
    """One line of line protocol (no trailing newline), timestamp in ms."""
    return (
        f"{escape_measurement(point.measurement)}{encode_tags(point.tags)} "
        f"{encode_fields(point.fields)} {point.time_ms}"
    )


def encode_batch(points: Iterable[Point]) -> bytes:
    """A /write request body."""
    return "\n".join(encode_point(p) for p in points).encode()
