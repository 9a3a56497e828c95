"""FastAPI dependencies: the app state, a SQL session, the current user, paging."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request, Security
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from api.access import Principal, grid_names
from api.models import ApiKey, Role, User
from api.security import TokenError, secret_matches, split_api_key
from api.state import AppState

TOKEN_URL = "/api/v1/login/access-token"  # noqa: S105  (a path)

oauth2 = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)
api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key, `gw_<prefix>_<secret>`"
)


# Dependencies are coroutines where they do no I/O: FastAPI runs a plain function
# on a worker thread, a hop that costs more than the work itself.
async def get_state(request: Request) -> AppState:
    """The connections opened at start-up."""
    state: AppState = request.app.state.gridwatch
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    """One SQL session per request, closed afterwards."""
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

UNAUTHENTICATED = HTTPException(
    401,
    "not authenticated: log in for a bearer token, or send X-API-Key",
    headers={"WWW-Authenticate": "Bearer"},
)


async def current_principal(
    state: StateDep,
    token: Annotated[str | None, Security(oauth2)],
    api_key: Annotated[str | None, Security(api_key_header)],
) -> Principal:
    """The user behind the bearer token or API key (an API key may also come as a bearer)."""
    credential = api_key or token
    if not credential:
        raise UNAUTHENTICATED
    # Looked up at most every few seconds per credential: most requests cost no SQL,
    # no token check and no worker thread.
    principal = state.principals.get(credential)
    if principal is None:
        principal = await state.read(lambda session: _load_principal(state, session, credential))
        if principal is None:
            raise UNAUTHENTICATED
        state.principals.put(credential, principal)
    return principal


def _load_principal(state: AppState, session: Session, credential: str) -> Principal | None:
    parts = split_api_key(credential)
    if parts is not None:
        prefix, secret = parts
        key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        now = state.clock.now_ms()
        if key is None or not secret_matches(secret, key.secret_hash):
            return None
        if key.expires_ms is not None and key.expires_ms <= now:
            return None
        user_id = key.user_id
    else:
        try:
            user_id = state.tokens.user_id(credential)
        except TokenError:
            return None
    user = session.scalar(select(User).where(User.id == user_id).options(selectinload(User.grids)))
    if user is None or not user.active:
        return None
    return principal_of(session, user)


def principal_of(session: Session, user: User) -> Principal:
    """The principal a user row stands for."""
    grid_ids = frozenset(grid.id for grid in user.grids)
    return Principal(
        user_id=user.id,
        username=user.username,
        role=Role(user.role),
        community=user.community_id,
        grid_ids=grid_ids,
        grid_names=grid_names(session, grid_ids),
    )


CurrentUser = Annotated[Principal, Depends(current_principal)]


def require(*roles: Role) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency admitting only ``roles``."""
    allowed = frozenset(roles)

    async def check(principal: CurrentUser) -> Principal:
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise HTTPException(403, f"only {names} may do this")
        return principal

    return check


AdminUser = Annotated[Principal, Depends(require(Role.ADMIN))]
Actor = Annotated[Principal, Depends(require(Role.ADMIN, Role.OPERATOR, Role.GRID_WORKER))]


class Paging(BaseModel):
    """Which slice of a list to return."""

    offset: int
    limit: int


async def paging(
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="items to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="items per page")] = 50,
) -> Paging:
    """Offset/limit query parameters, bounded."""
    return Paging(offset=offset, limit=limit)


PagingDep = Annotated[Paging, Depends(paging)]


def community_filter(principal: Principal, requested: str | None) -> str | None:
    """The community a list is limited to: the principal's own, or the one asked for."""
    if principal.community is None:
        return requested
    if requested is not None and requested != principal.community:
        raise HTTPException(403, f"community {requested} is outside your scope")
    return principal.community


def in_scope(principal: Principal, community: str, what: Any) -> None:
    """404 for a thing in another community: its existence is not disclosed."""
    if not principal.sees_community(community):
        raise HTTPException(404, f"{what} not found")


COMMUNITY_PATTERN = r"^[a-z0-9-]{2,32}$"
CommunitySlug = Annotated[str, Field(pattern=COMMUNITY_PATTERN, examples=["zjxc"])]
CommunityQuery = Annotated[
    str | None, Query(pattern=COMMUNITY_PATTERN, description="only this community")
]
RowId = Annotated[int, Path(ge=1, le=2**31 - 1, description="the row's id")]
