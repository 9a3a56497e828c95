"""Units (单元): a stairwell and its door, and how many homes are behind it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.crud import Page, apply, check_grid, get_or_404, in_community, paginate, writing
from api.deps import (
    AdminUser,
    CommunityQuery,
    CurrentUser,
    PagingDep,
    RowId,
    SessionDep,
    StateDep,
    in_scope,
)
from registry.document import Label
from registry.models import Building, Unit

router = APIRouter(prefix="/api/v1/units", tags=["registry"])

Households = Annotated[int, Field(ge=0, le=10_000)]


class UnitPublic(BaseModel):
    """A unit of a building."""

    id: int
    building: int
    number: str
    households: int

    model_config = {
        "json_schema_extra": {
            "examples": [{"id": 20, "building": 7, "number": "2", "households": 12}]
        }
    }


class UnitCreate(BaseModel):
    """A new unit."""

    building: Annotated[int, Field(ge=1, le=2**31 - 1)]
    number: Label
    households: Households = 0


class UnitUpdate(BaseModel):
    """Fields to change."""

    households: Households | None = None


def unit_public(row: Unit) -> UnitPublic:
    """The public view of a unit row."""
    return UnitPublic(
        id=row.id, building=row.building_id, number=row.number, households=row.households
    )


@router.get("", response_model=Page[UnitPublic])
def list_units(
    principal: CurrentUser,
    session: SessionDep,
    paging: PagingDep,
    community: CommunityQuery = None,
    building: RowId | None = None,
) -> Page[UnitPublic]:
    """Units you may see (a grid worker: those in their grids' buildings)."""
    query = in_community(
        select(Unit).join(Building).order_by(Unit.id), Building.community_id, principal, community
    )
    if building is not None:
        query = query.where(Unit.building_id == building)
    if principal.grid_scoped:
        query = query.where(Building.grid_id.in_(principal.grid_ids))
    return paginate(session, query, paging, unit_public)


@router.post("", response_model=UnitPublic, status_code=201, responses={409: {}})
def create_unit(body: UnitCreate, _: AdminUser, state: StateDep) -> UnitPublic:
    """Add a unit to a building."""
    with writing(state) as session:
        get_or_404(session, Building, body.building, "building")
        row = Unit(building_id=body.building, number=body.number, households=body.households)
        session.add(row)
        session.flush()
        return unit_public(row)


@router.get("/{unit_id}", response_model=UnitPublic, responses={404: {}})
def read_unit(unit_id: RowId, principal: CurrentUser, session: SessionDep) -> UnitPublic:
    """One unit."""
    row = get_or_404(session, Unit, unit_id, "unit")
    building = get_or_404(session, Building, row.building_id, "building")
    in_scope(principal, building.community_id, f"unit {unit_id}")
    check_grid(principal, building.grid_id, f"unit {unit_id}")
    return unit_public(row)


@router.patch("/{unit_id}", response_model=UnitPublic, responses={404: {}})
def update_unit(unit_id: RowId, body: UnitUpdate, _: AdminUser, state: StateDep) -> UnitPublic:
    """Change how many homes are behind the unit door."""
    with writing(state) as session:
        row = get_or_404(session, Unit, unit_id, "unit")
        apply(row, body)
        return unit_public(row)


@router.delete("/{unit_id}", status_code=204, responses={404: {}, 409: {}})
def delete_unit(unit_id: RowId, _: AdminUser, state: StateDep) -> Response:
    """Delete a unit with its households (409 while a device hangs on it)."""
    with writing(state) as session:
        session.delete(get_or_404(session, Unit, unit_id, "unit"))
    return Response(status_code=204)
