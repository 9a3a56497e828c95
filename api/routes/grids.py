"""Grids (网格): the parts of a community that grid workers look after."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.grids import rename_grids
from api.crud import Page, apply, get_or_404, in_community, paginate, writing
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
from registry.document import Slug, Text
from registry.models import Community, Grid

router = APIRouter(prefix="/api/v1/grids", tags=["registry"])


class GridPublic(BaseModel):
    """A grid of a community."""

    id: int
    community: str
    slug: str
    name: str

    model_config = {
        "json_schema_extra": {
            "examples": [{"id": 1, "community": "zjxc", "slug": "g1", "name": "第一网格"}]
        }
    }


class GridCreate(BaseModel):
    """A new grid."""

    community: CommunitySlug
    slug: Slug
    name: Text


class GridUpdate(BaseModel):
    """Fields to change."""

    name: Text | None = None


def grid_public(row: Grid) -> GridPublic:
    """The public view of a grid row."""
    return GridPublic(id=row.id, community=row.community_id, slug=row.slug, name=row.name)


@router.get("", response_model=Page[GridPublic])
def list_grids(
    principal: CurrentUser, session: SessionDep, paging: PagingDep, community: CommunityQuery = None
) -> Page[GridPublic]:
    """The grids of the communities you may see."""
    query = in_community(select(Grid).order_by(Grid.id), Grid.community_id, principal, community)
    return paginate(session, query, paging, grid_public)


@router.post("", response_model=GridPublic, status_code=201, responses={409: {}, 422: {}})
def create_grid(body: GridCreate, _: AdminUser, state: StateDep) -> GridPublic:
    """Add a grid to a community."""
    with writing(state) as session:
        get_or_404(session, Community, body.community, "community")
        _name_free(session, body.community, body.name)
        row = Grid(community_id=body.community, slug=body.slug, name=body.name)
        session.add(row)
        session.flush()
        return grid_public(row)


@router.get("/{grid_id}", response_model=GridPublic, responses={404: {}})
def read_grid(grid_id: RowId, principal: CurrentUser, session: SessionDep) -> GridPublic:
    """One grid."""
    row = get_or_404(session, Grid, grid_id, "grid")
    in_scope(principal, row.community_id, f"grid {grid_id}")
    return grid_public(row)


@router.patch("/{grid_id}", response_model=GridPublic, responses={404: {}, 409: {}})
def update_grid(grid_id: RowId, body: GridUpdate, _: AdminUser, state: StateDep) -> GridPublic:
    """Rename a grid."""
    with writing(state) as session:
        row = get_or_404(session, Grid, grid_id, "grid")
        if body.name is not None and body.name != row.name:
            _name_free(session, row.community_id, body.name)
            rename_grids(session, row.community_id, {row.name: body.name})
        apply(row, body)
        return grid_public(row)


def _name_free(session: Session, community: str, name: str) -> None:
    # Alerts name the grid they were routed to (alerts.models.Alert.grid), and a grid
    # worker sees the alerts naming one of their grids: two grids of a community with
    # one name would show each one's alerts to the other's workers.
    taken = session.scalar(select(Grid.id).where(Grid.community_id == community, Grid.name == name))
    if taken is not None:
        raise HTTPException(409, f"community {community} has a grid named {name} already")


@router.delete("/{grid_id}", status_code=204, responses={404: {}, 409: {}})
def delete_grid(grid_id: RowId, _: AdminUser, state: StateDep) -> Response:
    """Delete a grid that no building or worker belongs to any more (else 409)."""
    with writing(state) as session:
        session.delete(get_or_404(session, Grid, grid_id, "grid"))
    return Response(status_code=204)
