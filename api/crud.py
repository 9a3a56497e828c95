"""What every resource's routes share: pages, lookups, writes and personal-data masking."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from fastapi import HTTPException
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.access import Principal
from api.deps import Paging, community_filter
from api.state import AppState

T = TypeVar("T")
Row = TypeVar("Row")


class Page(BaseModel, Generic[T]):
    """One page of a list: the items, how many there are in all, and where this page starts."""

    items: list[T]
    total: int
    offset: int
    limit: int


def paginate(
    session: Session, query: Select[Any], paging: Paging, convert: Callable[[Any], T]
) -> Page[T]:
    """Run ``query`` for one page (ordered as given) and count the whole list."""
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows: Sequence[Any] = session.scalars(query.offset(paging.offset).limit(paging.limit)).all()
    return Page[T](
        items=[convert(row) for row in rows],
        total=total or 0,
        offset=paging.offset,
        limit=paging.limit,
    )


def get_or_404(session: Session, model: type[Row], key: Any, what: str) -> Row:
    """The row with primary key ``key``, or 404."""
    row = session.get(model, key)
    if row is None:
        raise HTTPException(404, f"{what} {key} not found")
    return row


def apply(row: Any, changes: BaseModel, exclude: frozenset[str] = frozenset()) -> None:
    """Set the fields a PATCH body gave, but for ``exclude``; null leaves a field as it is."""
    given = changes.model_dump(exclude_unset=True, exclude_none=True, exclude=set(exclude))
    for name, value in given.items():
        setattr(row, name, value)


@contextmanager
def writing(state: AppState) -> Iterator[Session]:
    """A write transaction; a broken constraint is 409, and the registry caches are dropped."""
    try:
        with state.database.write() as session:
            yield session
    except IntegrityError as exc:
        raise HTTPException(409, f"conflicts with existing data: {exc.orig}") from None
    state.registry_changed()


def mask_name(name: str | None) -> str | None:
    """王秀英 → 王**: enough to tell people apart on a screen, not to identify them."""
    return None if name is None else name[:1] + "*" * max(len(name) - 1, 1)


def mask_phone(phone: str | None) -> str | None:
    """13800002001 → 138****2001."""
    if phone is None:
        return None
    return phone[:3] + "****" + phone[-4:] if len(phone) > 7 else "*" * len(phone)


def in_community(
    query: Select[Any], column: Any, principal: Principal, requested: str | None
) -> Select[Any]:
    """Limit a list to the community asked for, within the principal's scope."""
    community = community_filter(principal, requested)
    return query if community is None else query.where(column == community)


def check_grid(principal: Principal, grid_id: int | None, what: str) -> None:
    """404 for a grid worker asking for something outside their grids."""
    if principal.grid_scoped and grid_id not in principal.grid_ids:
        raise HTTPException(404, f"{what} not found")
