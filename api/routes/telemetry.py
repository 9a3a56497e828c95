"""Telemetry history: a device or a group over a time range, aggregated, from InfluxDB.

Every parameter is checked before a query is built (see ``api/influxql.py``):
device ids by pattern and against the registry and your scope, fields against
the kind's schema, the function and interval from fixed sets, the range and
the number of points within the configured limits. What fails is a 400 or 422
saying which parameter and why; InfluxDB never sees it.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime, BaseModel
from sqlalchemy.orm import Session

from api.deps import CommunityQuery, CurrentUser, StateDep, community_filter
from api.influxql import EVERY_MS, Every, Function, History, QueryError, check_field
from api.routes.devices import KindName, allowed_devices, visible_records
from devices import KINDS
from devices.contract import DEVICE_ID_RE, EPOCH_MS_MAX
from influx.client import InfluxError
from registry.records import load_devices

router = APIRouter(prefix="/api/v1/telemetry", tags=["telemetry"])

MAX_DEVICES = 200
MAX_FIELDS = 8
DAY_MS = 86_400_000


class HistorySeries(BaseModel):
    """One device's points (or the group's, aggregated across devices)."""

    device_id: str | None
    points: list[list[Any]]  # [time_ms, value per field...]


class HistoryPublic(BaseModel):
    """A history: its parameters as understood, and the series."""

    kind: str
    function: Function
    every: Every
    start_ms: int
    end_ms: int
    columns: list[str]
    series: list[HistorySeries]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "kind": "streetlight",
                    "function": "mean",
                    "every": "1m",
                    "start_ms": 1795284000000,
                    "end_ms": 1795370400000,
                    "columns": ["time", "power_w"],
                    "series": [{"device_id": "zjxc-lamp-a012", "points": [[1795284000000, 72.0]]}],
                }
            ]
        }
    }


def _ms(moment: datetime | None, default: int) -> int:
    return default if moment is None else int(moment.timestamp() * 1000)


@router.get("/history", response_model=HistoryPublic, responses={400: {}, 404: {}, 503: {}})
async def history(
    principal: CurrentUser,
    state: StateDep,
    field: Annotated[
        list[str],
        Query(min_length=1, max_length=MAX_FIELDS, description="telemetry fields of the kind"),
    ],
    device_id: Annotated[
        list[str] | None,
        Query(max_length=MAX_DEVICES, description="devices (all of one kind)"),
    ] = None,
    community: CommunityQuery = None,
    kind: KindName | None = None,
    fn: Function = Function.MEAN,
    every: Every = Every.M1,
    start: Annotated[AwareDatetime | None, Query(description="default: end - 24 h")] = None,
    end: Annotated[AwareDatetime | None, Query(description="default: now")] = None,
    per_device: Annotated[bool, Query(description="one series per device, or one")] = True,
) -> HistoryPublic:
    """Aggregated history of devices (``device_id``), or of a kind in a community."""
    settings = state.settings
    end_ms = _ms(end, state.clock.now_ms())
    start_ms = _ms(start, end_ms - DAY_MS)
    if not 0 <= start_ms < end_ms <= EPOCH_MS_MAX:
        raise HTTPException(400, "start must be before end, both between 1970 and 2100")
    if end_ms - start_ms > settings.api_history_max_days * DAY_MS:
        raise HTTPException(400, f"a range is at most {settings.api_history_max_days} days")
    devices = await _devices(principal, state, device_id, community, kind)
    device_kind = KINDS[devices[0][1]]
    try:
        for name in field:
            check_field(device_kind, name, fn)
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None
    series_count = len(devices) if per_device else 1
    points = math.ceil((end_ms - start_ms) / EVERY_MS[every]) * series_count * len(field)
    if points > settings.api_history_max_points:
        raise HTTPException(
            400,
            f"this asks for up to {points} values; at most {settings.api_history_max_points}: "
            "shorten the range, take a longer interval, fewer fields or devices",
        )
    query = History(
        device_kind.measurement,
        tuple(dict.fromkeys(field)),
        fn,
        every,
        start_ms,
        end_ms,
        tuple(d for d, _ in devices),
        per_device,
    )
    try:
        result = await state.influx.query(query.influxql())
    except InfluxError as exc:
        raise HTTPException(503, f"InfluxDB: {exc}") from exc
    return HistoryPublic(
        kind=device_kind.name,
        function=fn,
        every=every,
        start_ms=start_ms,
        end_ms=end_ms,
        columns=["time", *query.fields],
        series=[HistorySeries(device_id=s.tags.get("device_id"), points=s.values) for s in result],
    )


async def _devices(
    principal: CurrentUser,
    state: StateDep,
    device_ids: list[str] | None,
    community: str | None,
    kind: str | None,
) -> list[tuple[str, str]]:
    """(device id, kind) of the devices asked for, each registered and within scope."""
    if device_ids:
        unique = list(dict.fromkeys(device_ids))
        for device_id in unique:
            # Checked by pattern before it goes near SQL, let alone InfluxQL.
            if not DEVICE_ID_RE.match(device_id):
                raise HTTPException(404, f"device {device_id[:64]!r} is not registered")
        found = [(r.device_id, r.kind) for r in await visible_records(state, principal, unique)]
        if len({k for _, k in found}) > 1:
            raise HTTPException(400, "the devices must all be of one kind")
        return found
    if kind is None:
        raise HTTPException(422, "name devices (device_id=...) or a community and a kind")
    chosen = community_filter(principal, community)
    if chosen is None:
        raise HTTPException(422, "name a community (community=...) with the kind")

    def group(session: Session) -> list[tuple[str, str]]:
        allowed = allowed_devices(state, session, principal)
        return [
            (r.device_id, r.kind)
            for r in load_devices(session, chosen)
            if r.kind == kind and (allowed is None or r.device_id in allowed)
        ]

    members = await state.read(group)
    if not members:
        raise HTTPException(404, f"no {kind} in {chosen} that you may see")
    if len(members) > MAX_DEVICES:
        raise HTTPException(400, f"a group is at most {MAX_DEVICES} devices")
    return members
