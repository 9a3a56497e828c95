"""Users and their API keys (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.crud import Page, get_or_404, paginate, writing
from api.deps import AdminUser, PagingDep, SessionDep, StateDep
from api.models import ApiKey, Role, User
from api.security import hash_password, new_api_key
from registry.models import Community, Grid

router = APIRouter(prefix="/api/v1/users", tags=["users"])

Username = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$", examples=["li.xiumei"])]
Password = Annotated[str, Field(min_length=8, max_length=256)]
UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class UserCreate(BaseModel):
    """A new user; operators, grid workers (and optionally viewers) belong to a community."""

    username: Username
    full_name: Annotated[str, Field(max_length=64)] | None = None
    role: Role
    community: Annotated[str, Field(pattern=r"^[a-z0-9-]{2,32}$")] | None = None
    grids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        default=[], max_length=100, description="grid ids a grid worker serves"
    )
    password: Password | None = Field(None, description="omit for a user that only has API keys")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "username": "li.xiumei",
                    "full_name": "李秀梅",
                    "role": "grid_worker",
                    "community": "zjxc",
                    "grids": [1],
                    "password": "a long passphrase",
                }
            ]
        }
    }


class UserUpdate(BaseModel):
    """Fields to change; ``grids`` replaces the list."""

    full_name: Annotated[str, Field(max_length=64)] | None = None
    grids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(None, max_length=100)
    password: Password | None = None
    active: bool | None = None


class UserPublic(BaseModel):
    """A user as the API shows it (never the password hash)."""

    id: int
    username: str
    full_name: str | None
    role: Role
    community: str | None
    grids: list[int]
    active: bool
    created_ms: int


class ApiKeyCreate(BaseModel):
    """A new API key for a user (it acts with the user's role and scope)."""

    name: Annotated[str, Field(min_length=1, max_length=64, examples=["control-room wall"])]
    expires_ms: Annotated[int, Field(ge=0, le=4_102_444_800_000)] | None = None


class ApiKeyPublic(BaseModel):
    """A stored key: its prefix identifies it, the secret is never shown again."""

    id: int
    name: str
    prefix: str
    created_ms: int
    expires_ms: int | None


class ApiKeyIssued(ApiKeyPublic):
    """A key just made: ``key`` is shown this once (send it as ``X-API-Key``)."""

    key: str


def user_public(user: User) -> UserPublic:
    """The public view of a user row."""
    return UserPublic(
        id=user.id,
        username=user.username,
        full_name=user.full_name,
        role=Role(user.role),
        community=user.community_id,
        grids=[grid.id for grid in user.grids],
        active=user.active,
        created_ms=user.created_ms,
    )


def _grids(session: Session, role: Role, community: str | None, ids: list[int]) -> list[Grid]:
    if ids and role is not Role.GRID_WORKER:
        raise HTTPException(422, "only grid workers have grids")
    grids = list(session.scalars(select(Grid).where(Grid.id.in_(ids)))) if ids else []
    if len(grids) != len(set(ids)) or any(g.community_id != community for g in grids):
        raise HTTPException(422, f"grids must be grids of community {community}")
    if role is Role.GRID_WORKER and not grids:
        raise HTTPException(422, "a grid worker serves at least one grid")
    return grids


def create_user(session: Session, body: UserCreate, now_ms: int) -> User:
    """Check and add a user (the CLI uses this too)."""
    if body.role in (Role.OPERATOR, Role.GRID_WORKER) and body.community is None:
        raise HTTPException(422, f"a user with role {body.role} belongs to a community")
    if body.role is Role.ADMIN and body.community is not None:
        raise HTTPException(422, "an admin has no community")
    if body.community is not None and session.get(Community, body.community) is None:
        raise HTTPException(422, f"no community {body.community}")
    user = User(
        username=body.username,
        full_name=body.full_name,
        role=body.role.value,
        community_id=body.community,
        password_hash=hash_password(body.password) if body.password else None,
        active=True,
        created_ms=now_ms,
    )
    user.grids = _grids(session, body.role, body.community, body.grids)
    session.add(user)
    session.flush()
    return user


def issue_api_key(session: Session, user: User, body: ApiKeyCreate, now_ms: int) -> ApiKeyIssued:
    """Make and store a key for ``user``; the result holds the key itself, once."""
    made = new_api_key()
    key = ApiKey(
        user_id=user.id,
        name=body.name,
        prefix=made.prefix,
        secret_hash=made.secret_hash,
        created_ms=now_ms,
        expires_ms=body.expires_ms,
    )
    session.add(key)
    session.flush()
    return ApiKeyIssued(**_key_public(key).model_dump(), key=made.key)


def _key_public(key: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        created_ms=key.created_ms,
        expires_ms=key.expires_ms,
    )


@router.get("", response_model=Page[UserPublic])
def list_users(
    _: AdminUser,
    session: SessionDep,
    paging: PagingDep,
    community: Annotated[str | None, Query(max_length=32)] = None,
    role: Role | None = None,
) -> Page[UserPublic]:
    """Every user, optionally of one community or role."""
    query = select(User).order_by(User.id)
    if community is not None:
        query = query.where(User.community_id == community)
    if role is not None:
        query = query.where(User.role == role.value)
    return paginate(session, query, paging, user_public)


@router.post("", response_model=UserPublic, status_code=201, responses={409: {}})
def add_user(body: UserCreate, _: AdminUser, state: StateDep) -> UserPublic:
    """Create a user."""
    with writing(state) as session:
        return user_public(create_user(session, body, state.clock.now_ms()))


@router.get("/{user_id}", response_model=UserPublic, responses={404: {}})
def read_user(user_id: UserId, _: AdminUser, session: SessionDep) -> UserPublic:
    """One user."""
    return user_public(get_or_404(session, User, user_id, "user"))


@router.patch("/{user_id}", response_model=UserPublic, responses={404: {}})
def update_user(user_id: UserId, body: UserUpdate, _: AdminUser, state: StateDep) -> UserPublic:
    """Change a user's name, grids, password or whether they may log in."""
    with writing(state) as session:
        user = get_or_404(session, User, user_id, "user")
        if body.full_name is not None:
            user.full_name = body.full_name
        if body.grids is not None:
            user.grids = _grids(session, Role(user.role), user.community_id, body.grids)
        if body.password is not None:
            user.password_hash = hash_password(body.password)
        if body.active is not None:
            user.active = body.active
        return user_public(user)


@router.delete("/{user_id}", status_code=204, responses={404: {}})
def delete_user(user_id: UserId, _: AdminUser, state: StateDep) -> Response:
    """Delete a user and their API keys."""
    with writing(state) as session:
        session.delete(get_or_404(session, User, user_id, "user"))
    return Response(status_code=204)


@router.get("/{user_id}/api-keys", response_model=list[ApiKeyPublic], responses={404: {}})
def list_api_keys(user_id: UserId, _: AdminUser, session: SessionDep) -> list[ApiKeyPublic]:
    """A user's keys (without their secrets)."""
    get_or_404(session, User, user_id, "user")
    keys = session.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id))
    return [_key_public(key) for key in keys]


@router.post(
    "/{user_id}/api-keys", response_model=ApiKeyIssued, status_code=201, responses={404: {}}
)
def add_api_key(user_id: UserId, body: ApiKeyCreate, _: AdminUser, state: StateDep) -> ApiKeyIssued:
    """Make an API key for a user; the response is the only time the key is shown."""
    with writing(state) as session:
        user = get_or_404(session, User, user_id, "user")
        return issue_api_key(session, user, body, state.clock.now_ms())


@router.delete("/{user_id}/api-keys/{key_id}", status_code=204, responses={404: {}})
def revoke_api_key(
    user_id: UserId,
    key_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    _: AdminUser,
    state: StateDep,
) -> Response:
    """Revoke a key (it stops working on this replica at once, elsewhere within 10 s)."""
    with writing(state) as session:
        key = get_or_404(session, ApiKey, key_id, "API key")
        if key.user_id != user_id:
            raise HTTPException(404, f"API key {key_id} not found")
        session.delete(key)
    return Response(status_code=204)
