"""Buildings (楼): numbered as people say them, each in one grid."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.crud import Page, apply, check_grid, get_or_404, in_community, paginate, writing
from api.deps import (
    AdminUser,
    CommunityQuery,
    CommunitySlug,
    CurrentUser,
    PagingDep,
    RowId,
    SessionDep,
    StateDep,
    in_scope,
)
from registry.document import Label, Latitude, Longitude
from registry.models import Building, Community, Grid

router = APIRouter(prefix="/api/v1/buildings", tags=["registry"])

Floors = Annotated[int, Field(ge=1, le=200)]


class BuildingPublic(BaseModel):
    """A building: its number (3 in 3号楼), grid and position."""

    id: int
    community: str
    number: str
    grid: int
    lat: float
    lon: float
    floors: int | None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": 7,
                    "community": "zjxc",
                    "number": "3",
                    "grid": 1,
                    "lat": 36.8117,
                    "lon": 118.0562,
                    "floors": 6,
                }
            ]
        }
    }


class BuildingCreate(BaseModel):
    """A new building."""

    community: CommunitySlug
    number: Label
    grid: int
    lat: Latitude
    lon: Longitude
    floors: Floors | None = None


class BuildingUpdate(BaseModel):
    """Fields to change."""

    grid: int | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None
    floors: Floors | None = None


def building_public(row: Building) -> BuildingPublic:
    """The public view of a building row."""
    return BuildingPublic(
        id=row.id,
        community=row.community_id,
        number=row.number,
        grid=row.grid_id,
        lat=row.lat,
        lon=row.lon,
        floors=row.floors,
    )


def _check_grid(session: Session, community: str, grid: int) -> None:
    row = session.get(Grid, grid)
    if row is None or row.community_id != community:
        raise HTTPException(422, f"no grid {grid} in community {community}")


@router.get("", response_model=Page[BuildingPublic])
def list_buildings(
    principal: CurrentUser,
    session: SessionDep,
    paging: PagingDep,
    community: CommunityQuery = None,
    grid: RowId | None = None,
) -> Page[BuildingPublic]:
    """Buildings you may see (a grid worker: those of their grids)."""
    query = in_community(
        select(Building).order_by(Building.id), Building.community_id, principal, community
    )
    if grid is not None:
        query = query.where(Building.grid_id == grid)
    if principal.grid_scoped:
        query = query.where(Building.grid_id.in_(principal.grid_ids))
    return paginate(session, query, paging, building_public)


@router.post("", response_model=BuildingPublic, status_code=201, responses={409: {}})
def create_building(body: BuildingCreate, _: AdminUser, state: StateDep) -> BuildingPublic:
    """Add a building to a community."""
    with writing(state) as session:
        get_or_404(session, Community, body.community, "community")
        _check_grid(session, body.community, body.grid)
        row = Building(
            community_id=body.community,
            number=body.number,
            grid_id=body.grid,
            lat=body.lat,
            lon=body.lon,
            floors=body.floors,
        )
        session.add(row)
        session.flush()
        return building_public(row)


@router.get("/{building_id}", response_model=BuildingPublic, responses={404: {}})
def read_building(
    building_id: RowId, principal: CurrentUser, session: SessionDep
) -> BuildingPublic:
    """One building."""
    row = get_or_404(session, Building, building_id, "building")
    in_scope(principal, row.community_id, f"building {building_id}")
    check_grid(principal, row.grid_id, f"building {building_id}")
    return building_public(row)


@router.patch("/{building_id}", response_model=BuildingPublic, responses={404: {}})
def update_building(
    building_id: RowId, body: BuildingUpdate, _: AdminUser, state: StateDep
) -> BuildingPublic:
    """Move a building to another grid, or correct its position or floors."""
    with writing(state) as session:
        row = get_or_404(session, Building, building_id, "building")
        if body.grid is not None:
            _check_grid(session, row.community_id, body.grid)
            row.grid_id = body.grid
        apply(row, body, exclude=frozenset({"grid"}))
        return building_public(row)


@router.delete("/{building_id}", status_code=204, responses={404: {}, 409: {}})
def delete_building(building_id: RowId, _: AdminUser, state: StateDep) -> Response:
    """Delete a building with its units and households (409 while devices are placed in it)."""
    with writing(state) as session:
        session.delete(get_or_404(session, Building, building_id, "building"))
    return Response(status_code=204)
