"""The dashboards' JSON: what Grafana would refuse or render wrong, checked without Grafana."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.build import GENERATED, boards, dashboards
from dashboards.influxql import variant_config
from devices import KINDS

ROOT = Path(__file__).resolve().parent.parent
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DATASOURCES = PROVISIONING / "datasources" / "influxdb.yaml"
PROVIDER = PROVISIONING / "dashboards" / "gridwatch.yaml"
GRID_WIDTH = 24
BUILTINS = {"timeFilter", "__interval", "__interval_ms", "__data"}
VARIABLE = re.compile(r"\$(?:\{(\w+)[^}]*\}|(\w+))")

DASHBOARDS = dashboards()


def each_dashboard() -> list[Any]:
    return [pytest.param(d, id=name) for name, d in DASHBOARDS.items()]


def provisioned_datasources() -> dict[str, str]:
    """uid → type of every provisioned data source."""
    data = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    return {ds["uid"]: ds["type"] for ds in data["datasources"]}


def datasource_refs(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``datasource`` object anywhere in a dashboard."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                yield value
            else:
                yield from datasource_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from datasource_refs(value)


def test_committed_json_is_what_the_code_generates() -> None:
    committed = {p.name: p.read_text(encoding="utf-8") for p in GENERATED.glob("*.json")}
    generated = {
        name: json.dumps(d, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        for name, d in DASHBOARDS.items()
    }
    assert committed.keys() == generated.keys(), "run `make dashboards` and commit the result"
    for name in generated:
        assert committed[name] == generated[name], f"{name} is stale: run `make dashboards`"


def test_six_dashboards_one_per_kind_plus_overview_and_system() -> None:
    titles = [d["title"] for d in DASHBOARDS.values()]
    assert titles == [
        "总览 Control room overview",
        "单元门 Doors",
        "路灯 Street lamps",
        "重点管护 Elderly care",
        "巡逻 Patrol",
        "系统 System",
    ]
    kinds = [b.kind for b in boards() if b.kind is not None]
    assert kinds == list(KINDS), "every kind contributes its board from devices/<kind>/panels.py"
    for name in KINDS:
        assert (ROOT / "devices" / name / "panels.py").is_file()


@pytest.mark.parametrize("dashboard", each_dashboard())
def test_panel_ids_unique_and_grid_without_overlaps(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= GRID_WIDTH, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize("dashboard", each_dashboard())
def test_datasources_resolve_to_the_provisioned_one(dashboard: dict[str, Any]) -> None:
    provisioned = provisioned_datasources()
    refs = list(datasource_refs(dashboard))
    assert len(refs) > len(dashboard["panels"])
    for ref in refs:
        assert provisioned.get(ref["uid"]) == ref["type"] == "influxdb", ref
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]


@pytest.mark.parametrize("dashboard", each_dashboard())
def test_variables_are_defined_before_use(dashboard: dict[str, Any]) -> None:
    variables = dashboard["templating"]["list"]
    assert variables[0]["name"] == "community", "the community variable comes first"
    defined = set(BUILTINS)
    for variable in variables:
        for used in VARIABLE.findall(json.dumps(variable.get("query", ""))):
            assert (used[0] or used[1]) in defined, f"${used} used before it is defined"
        defined.add(variable["name"])
    texts = [json.dumps(p) for p in dashboard["panels"]]
    texts.append(json.dumps(dashboard["annotations"]))
    for text in texts:
        for braced, plain in VARIABLE.findall(text):
            name = braced or plain
            if name.startswith(("tag_", "col", "measurement")):  # alias patterns, not variables
                continue
            assert name in defined, f"${name} is no variable of {dashboard['uid']}"


def test_links_connect_every_dashboard_to_every_other() -> None:
    uids = {d["uid"] for d in DASHBOARDS.values()}
    for dashboard in DASHBOARDS.values():
        targets = {link["url"].removeprefix("/d/") for link in dashboard["links"]}
        assert targets == uids - {dashboard["uid"]}
        assert all(link["includeVars"] and link["keepTime"] for link in dashboard["links"])


def test_the_provider_loads_the_generated_folder() -> None:
    provider = yaml.safe_load(PROVIDER.read_text(encoding="utf-8"))["providers"]
    [entry] = provider
    assert entry["type"] == "file" and entry["folderUid"] == "gridwatch"
    assert not entry["allowUiUpdates"], "the dashboards are code"


def test_the_sdk_reads_the_dashboards_back() -> None:
    # Imported here, after `dashboards`, which imports the SDK's deprecated classic
    # dashboard model once with its import-time warning silenced.
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.cog.runtime import register_dataquery_variant
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    register_dataquery_variant(variant_config())
    for name, dashboard in DASHBOARDS.items():
        decoded = Dashboard.from_json(dashboard)
        again = json.loads(JSONEncoder().encode(decoded))
        assert again["panels"] == dashboard["panels"], name
        assert again["templating"] == dashboard["templating"], name
