"""Device state: the latest telemetry and online status of one device."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel

from api.deps import SessionDep, StateDep
from devices import KINDS
from devices.contract import DeviceRecord
from devices.points import STATUS_MEASUREMENT
from influx.client import InfluxClient, InfluxError, quote_ident, quote_literal
from registry.records import get_device

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

DeviceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", examples=["zjxc-door-b03-u2"])]


class LatestState(BaseModel):
    """What the device last said."""

    device_id: str
    community: str
    kind: str
    place: str
    online: bool | None
    last_seen_ms: int | None
    values: dict[str, Any]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "device_id": "zjxc-door-b03-u2",
                    "community": "zjxc",
                    "kind": "door",
                    "place": "3号楼2单元",
                    "online": True,
                    "last_seen_ms": 1795370829756,
                    "values": {"locked": True, "open": False, "rssi_dbm": -71, "temp_c": 18.5},
                }
            ]
        }
    }


def _latest(influx: InfluxClient, measurement: str, device_id: str) -> dict[str, Any] | None:
    # Safe: the identifier and the literal are quoted, so no value can end them early.
    query = (
        f"SELECT * FROM {quote_ident(measurement)} "  # noqa: S608
        f'WHERE "device_id" = {quote_literal(device_id)} ORDER BY time DESC LIMIT 1'
    )
    series = influx.query(query)
    return series[0].records()[0] if series and series[0].values else None


@router.get("/{device_id}/latest", response_model=LatestState)
def latest_state(device_id: DeviceId, state: StateDep, session: SessionDep) -> LatestState:
    """The device's latest telemetry (from InfluxDB) and whether it is online."""
    record = get_device(session, device_id)
    if record is None:
        raise HTTPException(404, f"device {device_id} is not registered")
    try:
        telemetry = _latest(state.influx, KINDS[record.kind].measurement, device_id)
        status = _latest(state.influx, STATUS_MEASUREMENT, device_id)
    except InfluxError as exc:
        raise HTTPException(503, f"InfluxDB: {exc}") from exc
    return _state(record, telemetry, status)


def _state(
    record: DeviceRecord, telemetry: dict[str, Any] | None, status: dict[str, Any] | None
) -> LatestState:
    tag_keys = {"community", "device_id", *record.tags}
    values = {k: v for k, v in (telemetry or {}).items() if k != "time" and k not in tag_keys}
    times = [
        t for t in ((telemetry or {}).get("time"), (status or {}).get("time")) if t is not None
    ]
    return LatestState(
        device_id=record.device_id,
        community=record.community,
        kind=record.kind,
        place=record.place,
        online=None if status is None else bool(status.get("online")),
        last_seen_ms=max(times) if times else None,
        values={k: v for k, v in values.items() if v is not None},
    )
