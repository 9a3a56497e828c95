"""A whole city of communities generated from the demo's shape, for load tests.

Community ``n`` of ``N`` is the demo community 张家新村 copied: id ``zb-001``
(淄博), devices ``zb-001-door-b01-u1`` and so on, moved on a grid across the
city (about 900 m apart) so that maps and sun times stay plausible. They are
registered in the registry (the community file importer) before they are
simulated; ingest only accepts registered devices.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from registry.db import writing
from registry.demo.generate import document as demo_document
from registry.importer import import_document
from registry.records import load_communities

log = logging.getLogger("gridwatch.simulate")

PREFIX = "zb"
DEMO_ID = "zjxc"
SPACING_DEG = 0.008  # about 900 m north-south (a little less east-west at 37° N)
POSITION_KEYS = frozenset({"lat", "lon", "dock_lat", "dock_lon"})


def community_id(index: int) -> str:
    """The id of the city's community number ``index`` (from 1)."""
    return f"{PREFIX}-{index:03d}"


def _shift(node: Any, dlat: float, dlon: float) -> Any:
    """A copy of a part of the document with every position moved."""
    if isinstance(node, dict):
        out = copy.copy(node)  # keeps the demo's Inline mappings, which YAML writes on one line
        for key, value in node.items():
            if key in POSITION_KEYS and isinstance(value, float):
                out[key] = round(value + (dlon if key.endswith("lon") else dlat), 6)
            else:
                out[key] = _shift(value, dlat, dlon)
        return out
    if isinstance(node, list):
        return [_shift(item, dlat, dlon) for item in node]
    return node


def community_document(index: int, template: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Community ``index`` as a community file (Python objects), from the demo's."""
    template = template or demo_document()
    side = 27  # 726 communities fit a 27 x 27 grid
    row, column = divmod(index - 1, side)
    doc: dict[str, Any] = _shift(template, row * SPACING_DEG, column * SPACING_DEG)
    slug = community_id(index)
    doc["community"] = {**doc["community"], "id": slug, "name": f"城区小区{index:03d}"}
    for device in doc["devices"]:
        device["id"] = slug + device["id"].removeprefix(DEMO_ID)
    return doc


def register_city(sessions: sessionmaker[Session], count: int) -> list[str]:
    """Register communities 1..``count`` that are not yet (committing each); all their ids."""
    wanted = [community_id(i) for i in range(1, count + 1)]
    with sessions() as session:
        known = {c.id for c in load_communities(session)}
    missing = [i for i in range(1, count + 1) if community_id(i) not in known]
    template = demo_document()
    for done, index in enumerate(missing, start=1):
        # One community a transaction: an interrupted run keeps what it did. The
        # services may be writing the same SQLite file: writing() waits for them.
        with writing(sessions) as session:
            import_document(session, community_document(index, template))
        if done % 50 == 0 or done == len(missing):
            log.info("registered %d of %d new communities", done, len(missing))
    return wanted


def connections_needed(devices: int, limit: int) -> int:
    """Devices per connection so that ``devices`` fit in ``limit`` connections."""
    return max(1, math.ceil(devices / limit))
