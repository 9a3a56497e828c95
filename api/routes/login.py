"""Logging in: the OAuth2 password flow issues a bearer token; who am I."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel
from sqlalchemy import select

from api.deps import CurrentUser, SessionDep, StateDep
from api.models import User
from api.routes.users import UserPublic, user_public
from api.security import verify_password

router = APIRouter(prefix="/api/v1", tags=["login"])


class Token(BaseModel):
    """A bearer token: send it as ``Authorization: Bearer <access_token>``."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105  (the scheme)
    expires_in: int

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"access_token": "eyJhbGciOi...", "token_type": "bearer", "expires_in": 28800}
            ]
        }
    }


@router.post("/login/access-token", response_model=Token, responses={401: {}})
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], state: StateDep, session: SessionDep
) -> Token:
    """Exchange a username and password for a bearer token (OAuth2 password flow)."""
    user = session.scalar(select(User).where(User.username == form.username))
    if not verify_password(user.password_hash if user else None, form.password):
        raise HTTPException(401, "wrong username or password")
    if user is None or not user.active:
        raise HTTPException(401, "this user is deactivated")
    token = state.tokens.issue(user.id, state.clock.now_ms() // 1000)
    return Token(access_token=token, expires_in=state.tokens.ttl_s)


@router.get("/users/me", response_model=UserPublic, tags=["users"])
def me(principal: CurrentUser, session: SessionDep) -> UserPublic:
    """The user behind this request's credentials, with their role and scope."""
    user = session.get(User, principal.user_id)
    if user is None:
        raise HTTPException(401, "this user no longer exists")
    return user_public(user)
