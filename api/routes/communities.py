"""Communities (小区), and importing a whole community file."""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, HTTPException, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from alerts.grids import rename_grids
from api.crud import Page, apply, get_or_404, paginate, writing
from api.deps import AdminUser, CurrentUser, PagingDep, SessionDep, StateDep, in_scope
from api.state import AppState
from registry.document import CommunitySpec, Latitude, Longitude, Text
from registry.importer import RegistryImportError, import_document
from registry.models import Community

router = APIRouter(prefix="/api/v1/communities", tags=["registry"])

CommunityId = Annotated[str, Path(pattern=r"^[a-z0-9-]{2,32}$", examples=["zjxc"])]
MAX_IMPORT_BYTES = 8 * 1024 * 1024
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")

EXAMPLE: dict[str, Any] = {
    "id": "zjxc",
    "name": "张家新村",
    "city": "淄博市",
    "district": "临淄区",
    "lat": 36.8131,
    "lon": 118.0549,
    "timezone": "Asia/Shanghai",
    "settings": {"alerts": {"door.held_open": {"after_s": 300}}},
}


class CommunityPublic(BaseModel):
    """A community and its settings (alert threshold overrides)."""

    id: str
    name: str
    city: str | None
    district: str | None
    lat: float
    lon: float
    timezone: str
    settings: dict[str, Any]

    model_config = {"json_schema_extra": {"examples": [EXAMPLE]}}


class CommunityCreate(CommunitySpec):
    """A new community, as in the ``community:`` section of a community file."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})


class CommunityUpdate(BaseModel):
    """Fields to change."""

    name: Text | None = None
    city: Text | None = None
    district: Text | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None
    settings: dict[str, Any] | None = None


class ImportResult(BaseModel):
    """What the community holds after an import."""

    community: str
    grids: int
    workers: int
    buildings: int
    units: int
    households: int
    devices: int


def community_public(row: Community) -> CommunityPublic:
    """The public view of a community row."""
    return CommunityPublic(
        id=row.id,
        name=row.name,
        city=row.city,
        district=row.district,
        lat=row.lat,
        lon=row.lon,
        timezone=row.timezone,
        settings=row.settings,
    )


@router.get("", response_model=Page[CommunityPublic])
def list_communities(
    principal: CurrentUser, session: SessionDep, paging: PagingDep
) -> Page[CommunityPublic]:
    """The communities you may see."""
    query = select(Community).order_by(Community.id)
    if principal.community is not None:
        query = query.where(Community.id == principal.community)
    return paginate(session, query, paging, community_public)


@router.post("", response_model=CommunityPublic, status_code=201, responses={409: {}})
def create_community(body: CommunityCreate, _: AdminUser, state: StateDep) -> CommunityPublic:
    """Register a community (then its grids, buildings and devices, or import a whole file)."""
    with writing(state) as session:
        if session.get(Community, body.id) is not None:
            raise HTTPException(409, f"community {body.id} exists")
        row = Community(**body.model_dump())
        session.add(row)
        session.flush()
        return community_public(row)


@router.get("/{community_id}", response_model=CommunityPublic, responses={404: {}})
def read_community(
    community_id: CommunityId, principal: CurrentUser, session: SessionDep
) -> CommunityPublic:
    """One community."""
    in_scope(principal, community_id, f"community {community_id}")
    return community_public(get_or_404(session, Community, community_id, "community"))


@router.patch("/{community_id}", response_model=CommunityPublic, responses={404: {}})
def update_community(
    community_id: CommunityId, body: CommunityUpdate, _: AdminUser, state: StateDep
) -> CommunityPublic:
    """Change a community's name, position or settings."""
    with writing(state) as session:
        row = get_or_404(session, Community, community_id, "community")
        apply(row, body)
        return community_public(row)


@router.delete("/{community_id}", status_code=204, responses={404: {}})
def delete_community(community_id: CommunityId, _: AdminUser, state: StateDep) -> Response:
    """Delete a community with everything in it (grids, buildings, devices, alerts, users)."""
    with writing(state) as session:
        session.delete(get_or_404(session, Community, community_id, "community"))
    return Response(status_code=204)


@router.post(
    "/import",
    response_model=ImportResult,
    responses={422: {"description": "the file's problems, each with its path in the file"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "a community file (registry/README.md), as YAML or JSON",
            "content": {
                "application/yaml": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def import_community(request: Request, _: AdminUser, state: StateDep) -> ImportResult:
    """Import (or re-import) a whole community file: it replaces the community's content."""
    body = await request.body()
    if len(body) > MAX_IMPORT_BYTES:
        raise HTTPException(413, f"a community file is at most {MAX_IMPORT_BYTES} bytes")
    document = _parse(body, request.headers.get("content-type", ""))
    # The import is SQL work of seconds for a big community: off the event loop.
    return await run_in_threadpool(_import, state, document)


def _import(state: AppState, document: Any) -> ImportResult:
    try:
        with writing(state) as session:
            summary = import_document(session, document)
            rename_grids(session, summary.community, summary.renamed_grids)
    except RegistryImportError as exc:
        raise HTTPException(422, exc.problems) from None
    return ImportResult(
        community=summary.community,
        grids=summary.grids,
        workers=summary.workers,
        buildings=summary.buildings,
        units=summary.units,
        households=summary.households,
        devices=summary.devices,
    )


def _parse(body: bytes, content_type: str) -> Any:
    try:
        if content_type.split(";")[0].strip() in YAML_TYPES:
            return yaml.safe_load(body)
        return json.loads(body)
    except (yaml.YAMLError, ValueError) as exc:
        raise HTTPException(422, f"not a valid community file: {exc}") from None
