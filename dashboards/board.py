"""A board is what one dashboard module declares; :func:`render` makes it a Grafana dashboard.

Everything the six dashboards share is added here, once: the ``community`` variable
(first, so every other variable and query may use it), links to all the other
boards, the alert annotations, time range, refresh and tags.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders.dashboard import (
    AnnotationEventFieldMapping,
    AnnotationQuery,
    Dashboard,
    DashboardLink,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from dashboards.influxql import InfluxQL
from dashboards.widgets import (
    ALERT_EVENT,
    COMMUNITY,
    DATASOURCE,
    STATUS,
    TIME,
    PanelBuilder,
    ident,
    select,
    tag_is,
)

Variable = Builder[model.VariableModel]
TAG = "gridwatch"


@dataclass(frozen=True)
class Board:
    """One dashboard: its identity and its sections of panels."""

    uid: str
    title: str
    sections: Sequence[tuple[str, Sequence[PanelBuilder]]]
    description: str
    kind: str | None = None  # the device kind whose alerts it annotates; None: all
    variables: Sequence[Variable] = field(default_factory=tuple)


def community_variable() -> QueryVariable:
    """``$community``: the communities that have reported, one or all."""
    return (
        QueryVariable("community")
        .label("小区 Community")
        .datasource(DATASOURCE)
        .query(f'SHOW TAG VALUES FROM {ident(STATUS)} WITH KEY = "community"')
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
    )


def tag_variable(name: str, label: str, measurement: str) -> QueryVariable:
    """A multi-select over one tag's values within ``$community`` (e.g. building, circuit)."""
    return (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(
            f"SHOW TAG VALUES FROM {ident(measurement)} WITH KEY = {ident(name)} WHERE {COMMUNITY}"
        )
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(model.VariableSort.NATURAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def alert_annotation(kind: str | None) -> AnnotationQuery:
    """Opened alerts as annotations on every time series of the board."""
    where = [COMMUNITY, tag_is("transition", "opened"), TIME]
    if kind is not None:
        where.append(tag_is("kind", kind))
    query = select('"title", "place", "severity"', ident(ALERT_EVENT), where)
    return (
        AnnotationQuery()
        .name("告警 Alerts")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("red")
        .target(InfluxQL(query).ref_id("Anno").datasource(DATASOURCE).table())
        .mappings(
            {
                target: AnnotationEventFieldMapping()
                .source(model.AnnotationEventFieldSource.FIELD)
                .value(column)
                for target, column in (("title", "title"), ("text", "place"), ("tags", "severity"))
            }
        )
    )


def links(boards: Sequence[Board], current: Board) -> list[Builder[model.DashboardLink]]:
    """A link to each other board, keeping the time range and the community."""
    return [
        DashboardLink(board.title)
        .type(model.DashboardLinkType.LINK)
        .url(f"/d/{board.uid}")
        .icon("dashboard")
        .tooltip(board.description)
        .include_vars(True)
        .keep_time(True)
        for board in boards
        if board.uid != current.uid
    ]


def render(board: Board, boards: Sequence[Board]) -> dict[str, Any]:
    """The board as Grafana dashboard JSON (panel ids numbered in order)."""
    builder = (
        Dashboard(board.title)
        .uid(board.uid)
        .description(board.description)
        .tags([TAG] + ([board.kind] if board.kind else []))
        .time("now-24h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .readonly()
        .with_variable(community_variable())
        .annotation(alert_annotation(board.kind))
        .links(links(boards, board))
    )
    for variable in board.variables:
        builder = builder.with_variable(variable)
    for title, panels in board.sections:
        builder = builder.with_row(Row(title))
        for panel in panels:
            builder = builder.with_panel(panel)
    data: dict[str, Any] = json.loads(JSONEncoder().encode(builder.build()))
    for number, panel in enumerate(data["panels"], start=1):
        panel["id"] = number
    return data


def to_json(dashboard: dict[str, Any]) -> str:
    """The committed form: sorted keys, Chinese as is, one trailing newline."""
    return json.dumps(dashboard, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
