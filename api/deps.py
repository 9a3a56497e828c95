"""FastAPI dependencies: the app state and a SQL session per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.state import AppState


def get_state(request: Request) -> AppState:
    """The connections opened at start-up."""
    state: AppState = request.app.state.gridwatch
    return state


def get_session(state: Annotated[AppState, Depends(get_state)]) -> Iterator[Session]:
    """One SQL session per request, closed afterwards."""
    with state.sessions() as session:
        yield session


StateDep = Annotated[AppState, Depends(get_state)]
SessionDep = Annotated[Session, Depends(get_session)]
