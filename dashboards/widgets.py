"""What every dashboard is made of: InfluxQL fragments and panel builders that share one style.

Panel builders take InfluxQL targets and return SDK panel builders with the data
source, ref ids, units and colours filled in, so a dashboard module only says what
to show. Queries filter by the ``$community`` variable and Grafana's ``$timeFilter``,
which Grafana (and the tests, see tests/test_dashboards_queries.py) substitute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from string import ascii_uppercase
from typing import Any

from grafana_foundation_sdk.builders import bargauge, common, geomap, stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import ThresholdsConfig
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import DataSourceRef

from dashboards.influxql import InfluxQL
from influx.client import quote_ident, quote_literal

PanelBuilder = Builder[model.Panel]

# The InfluxDB data source provisioned by deploy/grafana/provisioning/datasources/.
DATASOURCE_UID = "gridwatch-influxdb"
DATASOURCE = DataSourceRef(type_val="influxdb", uid=DATASOURCE_UID)

# Measurements written outside devices/points.py (the alerts service, ingest).
ALERT_EVENT = "alert_event"
DEVICE_INFO = "device_info"
INGEST_STATS = "ingest_stats"
INGEST_REJECTED = "ingest_rejected"
STATUS = "device_status"

COMMUNITY = '"community" =~ /^$community$/'
TIME = "$timeFilter"
# Grafana substitutes $__interval_ms as a number: a count per interval becomes a rate.
PER_SECOND = "* 1000 / $__interval_ms"

SEVERITY_COLOURS = {"critical": "red", "major": "orange", "minor": "yellow"}
ONLINE_MAPPING = model.ValueMap(
    options={
        "true": model.ValueMappingResult(text="在线", color="green", index=0),
        "false": model.ValueMappingResult(text="离线", color="red", index=1),
    }
)


# --- InfluxQL ------------------------------------------------------------------------


def ident(name: str) -> str:
    """A quoted identifier."""
    return quote_ident(name)


def tag_is(key: str, value: str) -> str:
    """``"key" = 'value'``."""
    return f"{quote_ident(key)} = {quote_literal(value)}"


def tag_matches(key: str, variable: str) -> str:
    """A tag filtered by a dashboard variable (single, multi or All: Grafana writes a regex)."""
    return f"{quote_ident(key)} =~ /^${variable}$/"


def select(
    columns: str,
    source: str,
    where: Iterable[str],
    group_by: Sequence[str] = (),
    tail: str = "",
) -> str:
    """One InfluxQL SELECT; ``group_by`` items are tag names or ``time(...)``.

    Built from this package's constants only: names are quoted with ``quote_ident``,
    literals with ``quote_literal``, and ``$variables`` are Grafana's to substitute.
    """
    text = f"SELECT {columns} FROM {source} WHERE {' AND '.join(where)}"  # noqa: S608
    if group_by:
        text += " GROUP BY " + ", ".join(g if g.startswith("time(") else ident(g) for g in group_by)
    return f"{text} {tail}".rstrip()


def subquery(inner: str) -> str:
    """A SELECT used as the source of another."""
    return f"({inner})"


def any_of(key: str, values: Iterable[str]) -> str:
    """``("key" = 'a' OR "key" = 'b')``."""
    return "(" + " OR ".join(tag_is(key, v) for v in values) + ")"


def latest_status(kind: str | None, tags: Sequence[str] = ()) -> str:
    """Each device's last reported ``online`` (its retained status or its last will).

    No time filter: the state that counts is the last one ever reported.
    """
    where = [COMMUNITY] + ([tag_is("kind", kind)] if kind else [])
    return select('last("online") AS "online"', ident(STATUS), where, ["device_id", "kind", *tags])


def offline_devices(kind: str | None, tags: Sequence[str] = ()) -> str:
    """Devices whose last status says offline, with the time they went offline."""
    return select(
        '"online"',
        subquery(latest_status(kind, tags)),
        ['"online" = false'],
        ["device_id", "kind", *tags],
    )


def open_alerts(kind: str | None, group_by: Sequence[str]) -> str:
    """Alerts open now: ``open`` is +1 when one opens and -1 when it resolves, so the sum
    over all time is what is open (no time filter on purpose)."""
    where = [COMMUNITY] + ([tag_is("kind", kind)] if kind else [])
    return select('sum("open") AS "open"', ident(ALERT_EVENT), where, group_by)


def alert_transitions(kind: str | None, *more: str) -> str:
    """The alert log of the time range, newest first (``more``: fields a kind's alerts add)."""
    where = [COMMUNITY, TIME] + ([tag_is("kind", kind)] if kind else [])
    names = ("title", "place", "severity", "transition", "rule", "device_id", "alert_id", *more)
    columns = ", ".join(ident(name) for name in names)
    return select(columns, ident(ALERT_EVENT), where, tail="ORDER BY time DESC LIMIT 100")


def count_per_interval(
    field: str, measurement: str, where: Iterable[str], by: Sequence[str]
) -> str:
    """Points per ``$__interval``, per tag set, zeros where nothing happened."""
    return select(
        f"count({ident(field)})",
        ident(measurement),
        [COMMUNITY, *where, TIME],
        ["time($__interval)", *by],
        "fill(0)",
    )


# --- panels --------------------------------------------------------------------------


def targets(*queries: InfluxQL) -> list[Builder[Any]]:
    """The queries with ref ids A, B, ... and the data source set."""
    return [q.ref_id(ascii_uppercase[i]).datasource(DATASOURCE) for i, q in enumerate(queries)]


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (from minus infinity)."""
    return (
        ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


def severity_overrides(panel: Any) -> Any:
    """Colour each series named after a severity in that severity's colour."""
    for severity, colour in SEVERITY_COLOURS.items():
        panel = panel.override_by_name(
            severity,
            [
                model.DynamicConfigValue(
                    id_val="color", value={"mode": "fixed", "fixedColor": colour}
                )
            ],
        )
    return panel


def link_column(panel: table.Panel, column: str, title: str, url: str) -> table.Panel:
    """Make each cell of ``column`` a link (``${__data.fields.<name>}`` fills in the row)."""
    link = {"title": title, "url": url, "targetBlank": True}
    return panel.override_by_name(column, [model.DynamicConfigValue(id_val="links", value=[link])])


def timeseries_panel(
    title: str,
    *queries: InfluxQL,
    unit: str = "short",
    bars: bool = False,
    stacked: bool = False,
    span: int = 12,
    height: int = 8,
    description: str = "",
) -> timeseries.Panel:
    """A time series (lines, or stacked bars for counts)."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets(*queries))
        .unit(unit)
        .span(span)
        .height(height)
        .fill_opacity(60 if bars else 10)
        .legend(
            common.VizLegendOptions()
            .display_mode(common_model.LegendDisplayMode.LIST)
            .placement(common_model.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    if bars:
        panel = panel.draw_style(common_model.GraphDrawStyle.BARS)
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(common_model.StackingMode.NORMAL))
    return panel


def stat_panel(
    title: str,
    *queries: InfluxQL,
    unit: str = "short",
    steps: Sequence[tuple[float | None, str]] = ((None, "green"),),
    mappings: Sequence[model.ValueMapping] = (),
    reducer: str = "lastNotNull",
    span: int = 6,
    height: int = 5,
    description: str = "",
) -> stat.Panel:
    """Big numbers, one per series, coloured by thresholds or value mappings."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets(*queries))
        .unit(unit)
        .span(span)
        .height(height)
        .thresholds(thresholds(*steps))
        .color_mode(common_model.BigValueColorMode.BACKGROUND)
        .graph_mode(common_model.BigValueGraphMode.NONE)
        .text_mode(common_model.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(common.ReduceDataOptions().calcs([reducer]).values(False))
    )
    if mappings:
        panel = panel.mappings(list(mappings))
    return panel


def table_panel(
    title: str,
    *queries: InfluxQL,
    transformations: Sequence[model.DataTransformerConfig] = (),
    sort_by: str | None = None,
    descending: bool = False,
    mappings: Sequence[model.ValueMapping] = (),
    renames: Mapping[str, str] | None = None,
    span: int = 12,
    height: int = 8,
    description: str = "",
) -> table.Panel:
    """A table of rows (the queries in table format), optionally renamed and sorted."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets(*(q.table() for q in queries)))
        .span(span)
        .height(height)
    )
    steps = list(transformations)
    if renames:
        steps.append(organize(renames))
    if steps:
        panel = panel.transformations(steps)
    if sort_by is not None:
        panel = panel.sort_by(
            [common.TableSortByFieldState().display_name(sort_by).desc(descending)]
        )
    if mappings:
        panel = panel.mappings(list(mappings))
    return panel


def bargauge_panel(
    title: str,
    *queries: InfluxQL,
    unit: str = "short",
    span: int = 12,
    height: int = 8,
    description: str = "",
) -> bargauge.Panel:
    """Horizontal bars, one per series, for rankings."""
    return (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets(*queries))
        .unit(unit)
        .span(span)
        .height(height)
        .orientation(common_model.VizOrientation.HORIZONTAL)
        .reduce_options(common.ReduceDataOptions().calcs(["sum"]).values(False))
        .thresholds(thresholds((None, "blue")))
    )


def marker_layer(
    name: str,
    ref_id: str | None = None,
    colour_field: str | None = None,
    fixed_colour: str = "blue",
) -> common.MapLayerOptions:
    """A geomap marker layer placed by ``lat``/``lon`` columns: one query's rows, or all."""
    colour: dict[str, str] = {"fixed": fixed_colour}
    if colour_field is not None:
        colour["field"] = colour_field
    layer = (
        common.MapLayerOptions()
        .type("markers")
        .name(name)
        .location(
            common.FrameGeometrySource()
            .mode(common_model.FrameGeometrySourceMode.COORDS)
            .latitude("lat")
            .longitude("lon")
        )
        .tooltip(True)
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": colour,
                    "size": {"fixed": 6},
                    "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                    "opacity": 0.8,
                },
            }
        )
    )
    if ref_id is not None:
        layer = layer.filter_data({"id": "byRefId", "options": ref_id})
    return layer


def geomap_panel(
    title: str,
    *queries: InfluxQL,
    layers: Sequence[common.MapLayerOptions],
    transformations: Sequence[model.DataTransformerConfig] = (),
    mappings: Sequence[model.ValueMapping] = (),
    steps: Sequence[tuple[float | None, str]] = ((None, "blue"),),
    span: int = 12,
    height: int = 12,
    description: str = "",
) -> geomap.Panel:
    """A map fitted to its data (the community), one marker layer per query."""
    panel = (
        geomap.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets(*(q.table() for q in queries)))
        .span(span)
        .height(height)
        .view(geomap.MapViewConfig().id("fit").all_layers(True).zoom(16))
        .basemap(common.MapLayerOptions().type("osm-standard").name("底图"))
        .layers(list(layers))
        .thresholds(thresholds(*steps))
    )
    if transformations:
        panel = panel.transformations(list(transformations))
    if mappings:
        panel = panel.mappings(list(mappings))
    return panel


def join_by(field: str) -> model.DataTransformerConfig:
    """Join the queries' rows on one column (e.g. ``device_id``)."""
    return model.DataTransformerConfig(
        id_val="joinByField", options={"byField": field, "mode": "outer"}
    )


def organize(renames: Mapping[str, str]) -> model.DataTransformerConfig:
    """Rename columns for the operator (``Time`` → ``上次用水``...)."""
    return model.DataTransformerConfig(id_val="organize", options={"renameByName": dict(renames)})


def place_name(building: str = "building", unit: str = "unit", room: str = "room") -> str:
    """How people name a place, as a Grafana alias: 3号楼2单元501."""
    parts = [f"$tag_{building}号楼"]
    if unit:
        parts.append(f"$tag_{unit}单元")
    if room:
        parts.append(f"$tag_{room}")
    return "".join(parts)
