"""Device state across many devices: the latest of each, and how many are online."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.crud import Page
from api.deps import CommunityQuery, CurrentUser, PagingDep, StateDep, community_filter
from api.influxql import by_device, latest_in_community_query
from api.routes.devices import KindName, LatestState, allowed_devices, latest_states
from devices import KINDS
from devices.contract import DeviceRecord
from devices.points import STATUS_MEASUREMENT
from influx.client import InfluxError
from registry.models import Device
from registry.records import load_devices

router = APIRouter(prefix="/api/v1/state", tags=["devices"])


class KindOnline(BaseModel):
    """How many devices of a kind are online, by their latest status."""

    kind: str
    registered: int
    online: int
    offline: int
    unknown: int  # registered, but no status ever seen
    ratio: float  # online / registered

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "kind": "streetlight",
                    "registered": 169,
                    "online": 167,
                    "offline": 2,
                    "unknown": 0,
                    "ratio": 0.988,
                }
            ]
        }
    }


def _community(principal: CurrentUser, requested: str | None) -> str:
    community = community_filter(principal, requested)
    if community is None:
        raise HTTPException(422, "name a community (?community=...)")
    return community


@router.get("/latest", response_model=Page[LatestState], responses={503: {}})
async def latest_of_kind(
    kind: KindName,
    principal: CurrentUser,
    state: StateDep,
    paging: PagingDep,
    community: CommunityQuery = None,
) -> Page[LatestState]:
    """The latest state of each device of a kind in a community, a page at a time."""
    chosen = _community(principal, community)

    def visible(session: Session) -> list[DeviceRecord]:
        allowed = allowed_devices(state, session, principal)
        return [
            r
            for r in load_devices(session, chosen)
            if r.kind == kind and (allowed is None or r.device_id in allowed)
        ]

    records = await state.read(visible)
    page = records[paging.offset : paging.offset + paging.limit]
    return Page[LatestState](
        items=await latest_states(state, page),
        total=len(records),
        offset=paging.offset,
        limit=paging.limit,
    )


@router.get("/online", response_model=list[KindOnline], responses={503: {}})
async def online_ratios(
    principal: CurrentUser, state: StateDep, community: CommunityQuery = None
) -> list[KindOnline]:
    """Per kind: registered devices, how many are online, offline or never heard of."""
    chosen = _community(principal, community)

    def visible(session: Session) -> dict[str, str]:
        allowed = allowed_devices(state, session, principal)
        return {
            device_id: kind
            for device_id, kind in session.execute(
                select(Device.device_id, Device.kind).where(Device.community_id == chosen)
            )
            if allowed is None or device_id in allowed
        }

    kinds = await state.read(visible)
    try:
        series = await state.influx.query(latest_in_community_query(STATUS_MEASUREMENT, chosen))
    except InfluxError as exc:
        raise HTTPException(503, f"InfluxDB: {exc}") from exc
    statuses = by_device(series)
    ratios = []
    for kind in KINDS:
        ids = [d for d, k in kinds.items() if k == kind]
        online = sum(1 for d in ids if d in statuses and statuses[d].get("online"))
        known = sum(1 for d in ids if d in statuses)
        ratios.append(
            KindOnline(
                kind=kind,
                registered=len(ids),
                online=online,
                offline=known - online,
                unknown=len(ids) - known,
                ratio=round(online / len(ids), 4) if ids else 0.0,
            )
        )
    return ratios
