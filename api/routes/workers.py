"""Grid workers (网格员) and managers: who alerts go to, and by which channels.

Channel secrets (DingTalk signing keys, webhook secrets) are write-only: the
API shows that one is set, never its value. Viewers see workers' phones masked.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.access import Principal
from api.crud import Page, get_or_404, in_community, mask_phone, paginate, writing
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
from registry.document import Channel, Phone, Text
from registry.models import ROLE_GRID_WORKER, ROLE_MANAGER, Community, Grid, GridWorker

router = APIRouter(prefix="/api/v1/grid-workers", tags=["registry"])

SECRET_SHOWN = "***"  # noqa: S105  (what replaces a secret)


class GridWorkerPublic(BaseModel):
    """A grid worker or manager, their grid and channels (secrets hidden)."""

    id: int
    community: str
    grid: int | None
    name: str
    phone: str
    role: str
    on_duty: bool
    channels: list[dict[str, Any]]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": 3,
                    "community": "zjxc",
                    "grid": 1,
                    "name": "李秀梅",
                    "phone": "13800001001",
                    "role": "grid_worker",
                    "on_duty": True,
                    "channels": [{"type": "dingtalk", "url": "https://...", "secret": "***"}],
                }
            ]
        }
    }


class GridWorkerCreate(BaseModel):
    """A new grid worker (``grid`` required) or manager (``grid`` optional)."""

    community: CommunitySlug
    grid: int | None = None
    name: Text
    phone: Phone
    role: str = ROLE_GRID_WORKER
    on_duty: bool = True
    channels: list[Channel] = []


class GridWorkerUpdate(BaseModel):
    """Fields to change; ``channels`` replaces the list."""

    grid: int | None = None
    name: Text | None = None
    phone: Phone | None = None
    on_duty: bool | None = None
    channels: list[Channel] | None = None


def _channels(channels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: SECRET_SHOWN if k == "secret" else v for k, v in c.items()} for c in channels]


def worker_public(row: GridWorker, principal: Principal) -> GridWorkerPublic:
    """The public view of a worker row; phones masked for those who need none."""
    return GridWorkerPublic(
        id=row.id,
        community=row.community_id,
        grid=row.grid_id,
        name=row.name,
        phone=row.phone if principal.sees_personal_data else mask_phone(row.phone) or "",
        role=row.role,
        on_duty=row.on_duty,
        channels=_channels(row.channels),
    )


def _check(session: Session, community: str, grid: int | None, role: str) -> None:
    if role not in (ROLE_GRID_WORKER, ROLE_MANAGER):
        raise HTTPException(422, f"role is {ROLE_GRID_WORKER} or {ROLE_MANAGER}")
    if grid is None and role == ROLE_GRID_WORKER:
        raise HTTPException(422, "a grid worker has a grid")
    if grid is not None:
        row = session.get(Grid, grid)
        if row is None or row.community_id != community:
            raise HTTPException(422, f"no grid {grid} in community {community}")


def _stored(channels: list[Channel], phone: str) -> list[dict[str, Any]]:
    stored = [channel.model_dump(exclude_none=True) for channel in channels]
    for channel in stored:
        if channel["type"] == "sms":
            channel.setdefault("phone", phone)
    return stored


@router.get("", response_model=Page[GridWorkerPublic])
def list_workers(
    principal: CurrentUser,
    session: SessionDep,
    paging: PagingDep,
    community: CommunityQuery = None,
    grid: RowId | None = None,
    on_duty: bool | None = None,
) -> Page[GridWorkerPublic]:
    """The grid workers and managers of the communities you may see."""
    query = in_community(
        select(GridWorker).order_by(GridWorker.id), GridWorker.community_id, principal, community
    )
    if grid is not None:
        query = query.where(GridWorker.grid_id == grid)
    if on_duty is not None:
        query = query.where(GridWorker.on_duty == on_duty)
    return paginate(session, query, paging, lambda row: worker_public(row, principal))


@router.post("", response_model=GridWorkerPublic, status_code=201, responses={409: {}})
def create_worker(body: GridWorkerCreate, admin: AdminUser, state: StateDep) -> GridWorkerPublic:
    """Add a grid worker or manager."""
    with writing(state) as session:
        get_or_404(session, Community, body.community, "community")
        _check(session, body.community, body.grid, body.role)
        row = GridWorker(
            community_id=body.community,
            grid_id=body.grid,
            name=body.name,
            phone=body.phone,
            role=body.role,
            on_duty=body.on_duty,
            channels=_stored(body.channels, body.phone),
        )
        session.add(row)
        session.flush()
        return worker_public(row, admin)


@router.get("/{worker_id}", response_model=GridWorkerPublic, responses={404: {}})
def read_worker(worker_id: RowId, principal: CurrentUser, session: SessionDep) -> GridWorkerPublic:
    """One grid worker."""
    row = get_or_404(session, GridWorker, worker_id, "grid worker")
    in_scope(principal, row.community_id, f"grid worker {worker_id}")
    return worker_public(row, principal)


@router.patch("/{worker_id}", response_model=GridWorkerPublic, responses={404: {}})
def update_worker(
    worker_id: RowId, body: GridWorkerUpdate, admin: AdminUser, state: StateDep
) -> GridWorkerPublic:
    """Change a worker's grid, name, phone, duty or channels."""
    with writing(state) as session:
        row = get_or_404(session, GridWorker, worker_id, "grid worker")
        if "grid" in body.model_fields_set:
            _check(session, row.community_id, body.grid, row.role)
            row.grid_id = body.grid
        if body.name is not None:
            row.name = body.name
        if body.phone is not None:
            row.phone = body.phone
        if body.on_duty is not None:
            row.on_duty = body.on_duty
        if body.channels is not None:
            row.channels = _stored(body.channels, row.phone)
        return worker_public(row, admin)


@router.delete("/{worker_id}", status_code=204, responses={404: {}})
def delete_worker(worker_id: RowId, _: AdminUser, state: StateDep) -> Response:
    """Remove a grid worker."""
    with writing(state) as session:
        session.delete(get_or_404(session, GridWorker, worker_id, "grid worker"))
    return Response(status_code=204)
