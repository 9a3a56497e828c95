"""Writes through the API that names or other processes could break.

- Grids and the alerts that name them (``Alert.grid`` holds the grid's name, not its id),
  renamed through the API or by importing the community file again.
- The SQLite file is shared with other services' processes: the API waits for their writes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url

from alerts.models import Alert
from api.app import create_app
from gridwatch.services import import_community
from gridwatch.settings import Settings
from influx.client import InfluxClient
from registry.db import make_engine, make_sessionmaker
from registry.demo import DEMO_COMMUNITY_FILE
from stack.servers import Influxd, Mosquitto
from tests.test_api import (
    DOOR_G1,
    Api,
    add_alert,
    demo_registry,
    import_yaml,
    make_settings,
    open_api,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def api(
    tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, influx_db: InfluxClient
) -> Iterator[Api]:
    sql_url = demo_registry(tmp_path)
    settings = make_settings(mosquitto, influxd, influx_db, sql_url, api_client_id="api-writes")
    with TestClient(create_app(settings)) as client:
        yield open_api(client, sql_url, influx_db)


def alert_ids(api: Api, role: str, **params: int) -> list[int]:
    """The ids of the alerts a role's list shows."""
    response = api.get(role, "/api/v1/alerts", params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_a_renamed_grid_keeps_its_alerts(api: Api) -> None:
    g1 = api.grids["g1"]
    alert = add_alert(api.sql_url, "第一网格", DOOR_G1)
    renamed = api.client.patch(
        f"/api/v1/grids/{g1}", json={"name": "东区网格"}, headers=api.headers["admin"]
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "东区网格"
    assert api.get("admin", f"/api/v1/alerts/{alert}").json()["grid"] == "东区网格"
    assert alert_ids(api, "operator", grid=g1) == [alert]
    assert alert_ids(api, "worker") == [alert]  # the worker of g1
    assert api.post("worker", f"/api/v1/alerts/{alert}/acknowledge", json={}).status_code == 200


def test_two_grids_of_a_community_never_share_a_name(api: Api) -> None:
    admin = api.headers["admin"]
    taken = {"community": "zjxc", "slug": "g9", "name": "第二网格"}
    assert api.client.post("/api/v1/grids", json=taken, headers=admin).status_code == 409
    g1 = api.grids["g1"]
    clash = api.client.patch(f"/api/v1/grids/{g1}", json={"name": "第二网格"}, headers=admin)
    assert clash.status_code == 409
    # g2's alert stays out of the g1 worker's sight.
    theirs = add_alert(api.sql_url, "第二网格", "zjxc-door-b03-u2")
    assert theirs not in alert_ids(api, "worker")
    same = api.client.patch(f"/api/v1/grids/{g1}", json={"name": "第一网格"}, headers=admin)
    assert same.status_code == 200


def test_a_community_file_that_swaps_grid_names_swaps_them_on_alerts(api: Api) -> None:
    ours = add_alert(api.sql_url, "第一网格", DOOR_G1)
    theirs = add_alert(api.sql_url, "第二网格", "zjxc-door-b03-u2")
    text = DEMO_COMMUNITY_FILE.read_text(encoding="utf-8")
    swapped = text.replace("第一网格", "@").replace("第二网格", "第一网格").replace("@", "第二网格")
    imported = import_yaml(api, swapped)
    assert imported.status_code == 200, imported.text
    assert api.get("admin", f"/api/v1/alerts/{ours}").json()["grid"] == "第二网格"
    assert api.get("admin", f"/api/v1/alerts/{theirs}").json()["grid"] == "第一网格"
    assert alert_ids(api, "worker") == [ours]  # g1's worker: g1 is now called 第二网格


def test_gridwatch_registry_import_renames_grids_on_alerts(tmp_path: Path) -> None:
    sql_url = demo_registry(tmp_path)
    alert = add_alert(sql_url, "第一网格", DOOR_G1)
    renamed = tmp_path / "renamed.yaml"
    text = DEMO_COMMUNITY_FILE.read_text(encoding="utf-8").replace("第一网格", "东区网格")
    renamed.write_text(text, encoding="utf-8")
    summary = import_community(Settings(database_url=sql_url), renamed)
    assert summary.renamed_grids == {"第一网格": "东区网格"}
    with make_sessionmaker(make_engine(sql_url))() as session:
        assert session.get_one(Alert, alert).grid == "东区网格"


def test_a_community_file_naming_two_grids_alike_is_refused(api: Api) -> None:
    text = DEMO_COMMUNITY_FILE.read_text(encoding="utf-8").replace("第二网格", "第一网格")
    refused = import_yaml(api, text)
    assert refused.status_code == 422
    assert "grids[1].name: '第一网格' is already used at grids[0].name" in refused.json()["detail"]


def test_an_acknowledgement_waits_for_another_process_writing(api: Api) -> None:
    alert = add_alert(api.sql_url, "第一网格", DOOR_G1)
    # Another process (the alerts service) is writing this alert as the request comes.
    other = sqlite3.connect(
        make_url(api.sql_url).database or "", isolation_level=None, check_same_thread=False
    )
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE alerts SET occurrences = occurrences + 1 WHERE id = ?", (alert,))
    commit = threading.Timer(0.5, other.execute, ("COMMIT",))
    commit.start()
    try:
        ack = api.post("operator", f"/api/v1/alerts/{alert}/acknowledge", json={})
    finally:
        commit.join()
        other.close()
    assert ack.status_code == 200, ack.text
    assert ack.json()["occurrences"] == 2 and ack.json()["status"] == "acknowledged"
