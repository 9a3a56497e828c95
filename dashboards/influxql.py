"""The InfluxQL query type that grafana-foundation-sdk lacks: raw InfluxQL, as Grafana stores it.

Grafana's InfluxDB data source keeps a raw query as ``{"query": ..., "rawQuery": true,
"resultFormat": ...}``; the SDK ships no builder for it (DECISIONS.md), so this module
is that builder, registered with cog so that dashboards holding it decode again.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder, runtime, variants
from grafana_foundation_sdk.models.common import DataSourceRef

PLUGIN_ID = "influxdb"

ResultFormat = Literal["time_series", "table"]


class InfluxQLQuery(variants.Dataquery):
    """One raw InfluxQL target of a panel."""

    def __init__(
        self,
        query: str,
        *,
        ref_id: str | None = None,
        hide: bool | None = None,
        datasource: DataSourceRef | None = None,
        result_format: ResultFormat = "time_series",
        alias: str | None = None,
    ) -> None:
        self.query = query
        self.ref_id = ref_id
        self.hide = hide
        self.datasource = datasource
        self.result_format = result_format
        self.alias = alias

    def to_json(self) -> dict[str, object]:
        """The target as Grafana's InfluxDB data source stores it."""
        payload: dict[str, object] = {
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.ref_id is not None:
            payload["refId"] = self.ref_id
        if self.hide is not None:
            payload["hide"] = self.hide
        if self.datasource is not None:
            payload["datasource"] = self.datasource.to_json()
        if self.alias is not None:
            payload["alias"] = self.alias
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Decode a stored target (what cog calls when it reads a dashboard back)."""
        datasource = data.get("datasource")
        return cls(
            data["query"],
            ref_id=data.get("refId"),
            hide=data.get("hide"),
            datasource=DataSourceRef.from_json(datasource) if datasource else None,
            result_format=data.get("resultFormat", "time_series"),
            alias=data.get("alias"),
        )


def variant_config() -> runtime.DataqueryConfig:
    """Tells cog how to decode InfluxDB targets."""
    return runtime.DataqueryConfig(identifier=PLUGIN_ID, from_json_hook=InfluxQLQuery.from_json)


class InfluxQL(builder.Builder[InfluxQLQuery]):
    """Builder of an :class:`InfluxQLQuery`, in the SDK's fluent style."""

    def __init__(self, query: str) -> None:
        self._internal = InfluxQLQuery(query)

    def build(self) -> InfluxQLQuery:
        """The built target."""
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        """The target's id within its panel (A, B, ...)."""
        self._internal.ref_id = ref_id
        return self

    def datasource(self, datasource: DataSourceRef) -> Self:
        """The data source the query runs on."""
        self._internal.datasource = datasource
        return self

    def table(self) -> Self:
        """Return rows, with tags as columns, instead of one series per tag set."""
        self._internal.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        """Series name pattern, e.g. ``$tag_kind``."""
        self._internal.alias = alias
        return self
