"""InfluxQL built from checked parts only: no request text reaches a query unchecked.

Every part has one source: measurement and field names come from the kind's
schema (``devices/<kind>/schema.py``), device ids from the registry (after a
regex check), functions and intervals from fixed sets, times are integers.
Identifiers and literals are quoted on top of that, so even a value that
slipped through could not end its string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

import msgspec

from devices import KINDS
from devices.kind import DeviceKind
from devices.points import STATUS_MEASUREMENT
from influx.client import Series, quote_ident, quote_literal


class Function(StrEnum):
    """Aggregations a history may ask for."""

    MEAN = "mean"
    MAX = "max"
    MIN = "min"
    LAST = "last"
    SUM = "sum"


class Every(StrEnum):
    """Intervals a history may be grouped by."""

    S10 = "10s"
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    H6 = "6h"
    D1 = "1d"


EVERY_MS = {
    Every.S10: 10_000,
    Every.M1: 60_000,
    Every.M5: 300_000,
    Every.M15: 900_000,
    Every.H1: 3_600_000,
    Every.H6: 21_600_000,
    Every.D1: 86_400_000,
}
_NUMERIC = (msgspec.inspect.IntType, msgspec.inspect.FloatType)


@cache
def telemetry_fields(kind: str) -> dict[str, bool]:
    """The kind's stored telemetry fields, each with whether it is a number."""
    info = msgspec.inspect.type_info(KINDS[kind].telemetry)
    fields = info.fields if isinstance(info, msgspec.inspect.StructType) else ()
    return {f.name: isinstance(_unwrap(f.type), _NUMERIC) for f in fields if f.name != "ts"}


def _unwrap(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    if isinstance(info, msgspec.inspect.UnionType):
        kinds = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        return kinds[0] if len(kinds) == 1 else info
    return info


class QueryError(ValueError):
    """A history request that cannot be served, and why (answered with 400)."""


def check_field(kind: DeviceKind, field: str, function: Function) -> None:
    """The field must be in the kind's telemetry; only ``last`` works on non-numbers."""
    fields = telemetry_fields(kind.name)
    if field not in fields:
        known = ", ".join(sorted(fields))
        raise QueryError(f"{kind.name} has no telemetry field {field!r} (known: {known})")
    if not fields[field] and function is not Function.LAST:
        raise QueryError(f"{field} is not a number: only last works on it")


@dataclass(frozen=True, slots=True)
class History:
    """A checked history request."""

    measurement: str
    fields: tuple[str, ...]
    function: Function
    every: Every
    start_ms: int
    end_ms: int
    device_ids: tuple[str, ...]
    per_device: bool

    def influxql(self) -> str:
        """The query: one statement, grouped by time (and device), no empty buckets."""
        selected = ", ".join(
            f"{self.function.value}({quote_ident(f)}) AS {quote_ident(f)}" for f in self.fields
        )
        devices = " OR ".join(f'"device_id" = {quote_literal(d)}' for d in self.device_ids)
        group = f"time({self.every.value})" + (', "device_id"' if self.per_device else "")
        # Safe: every part was checked above and is quoted; times are integers.
        return (
            f"SELECT {selected} FROM {quote_ident(self.measurement)} "  # noqa: S608
            f"WHERE ({devices}) AND time >= {self.start_ms}ms AND time < {self.end_ms}ms "
            f"GROUP BY {group} fill(none)"
        )


def latest_query(measurement: str, device_ids: Sequence[str]) -> str:
    """The newest point of each device in ``measurement``."""
    devices = " OR ".join(f'"device_id" = {quote_literal(d)}' for d in device_ids)
    # Safe: the identifier and the literals are quoted; ids were checked against the registry.
    return (
        f"SELECT * FROM {quote_ident(measurement)} WHERE {devices} "  # noqa: S608
        'GROUP BY "device_id" ORDER BY time DESC LIMIT 1'
    )


def latest_in_community_query(measurement: str, community: str) -> str:
    """The newest point of each device of a community in ``measurement``."""
    # Safe: the identifier and the literal are quoted; the community was checked.
    return (
        f"SELECT * FROM {quote_ident(measurement)} "  # noqa: S608
        f'WHERE "community" = {quote_literal(community)} '
        'GROUP BY "device_id" ORDER BY time DESC LIMIT 1'
    )


def latest_statements(kind: DeviceKind, device_ids: Sequence[str]) -> str:
    """Telemetry and status of the devices, in one round trip (two statements)."""
    telemetry = latest_query(kind.measurement, device_ids)
    return f"{telemetry}; {latest_query(STATUS_MEASUREMENT, device_ids)}"


def by_device(series: Sequence[Series]) -> dict[str, dict[str, Any]]:
    """The one row per device of a latest query, keyed by device id."""
    rows: dict[str, dict[str, Any]] = {}
    for s in series:
        device = s.tags.get("device_id")
        if device and s.values:
            rows[device] = s.records()[0]
    return rows
