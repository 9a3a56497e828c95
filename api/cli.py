"""``gridwatch users add``: create a user (and an API key) without the API running."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import HTTPException
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from api.models import Role
from api.routes.users import ApiKeyCreate, UserCreate, create_user, issue_api_key
from gridwatch.clock import WallClock
from gridwatch.settings import Settings
from registry.db import make_engine, make_sessionmaker, migrate, writing


def add_user(
    settings: Settings,
    username: str,
    role: str,
    community: str | None,
    grids: list[int],
    password: str | None,
    api_key: bool,
) -> Iterator[str]:
    """Create the user with the same checks as the API; yields what to print."""
    try:
        body = UserCreate(
            username=username,
            role=Role(role),
            community=community,
            grids=grids,
            password=password,
        )
    except (ValidationError, ValueError) as exc:
        raise SystemExit(f"cannot create {username}: {exc}") from None
    migrate(settings.sql_url)
    now = WallClock().now_ms()
    engine = make_engine(settings.sql_url)
    try:
        # It reads (the community, the grids) before it writes, while the services
        # may be writing the same SQLite file: writing() waits for them.
        with writing(make_sessionmaker(engine)) as session:
            user = create_user(session, body, now)
            key = issue_api_key(session, user, ApiKeyCreate(name="cli"), now) if api_key else None
    except HTTPException as exc:
        raise SystemExit(f"cannot create {username}: {exc.detail}") from None
    except IntegrityError:
        raise SystemExit(f"cannot create {username}: the name is taken") from None
    finally:
        engine.dispose()
    yield f"created {role} {username} (id {user.id})"
    if key is not None:
        yield f"API key (shown once, send it as X-API-Key): {key.key}"
