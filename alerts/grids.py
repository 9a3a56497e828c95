"""Alerts follow their grid's name.

An alert keeps the name of the grid it was routed to (``Alert.grid``), and a
grid worker sees the alerts naming one of their grids: when a grid is renamed
(through the API, or by importing the community file again) its alerts must be
renamed in the same transaction, or its workers lose them.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import case, update
from sqlalchemy.orm import Session

from alerts.models import Alert


def rename_grids(session: Session, community: str, renamed: Mapping[str, str]) -> None:
    """Rename ``old: new`` on the community's alerts, all at once (so a swap stays a swap)."""
    if not renamed:
        return
    statement = (
        update(Alert)
        .where(Alert.community_id == community, Alert.grid.in_(list(renamed)))
        .values(grid=case(renamed, value=Alert.grid))
        .execution_options(synchronize_session=False)
    )
    session.execute(statement)
