"""The API shares its SQLite file with other services' processes, and waits for their writes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url

from api.app import create_app
from influx.client import InfluxClient
from stack.servers import Influxd, Mosquitto
from tests.test_api import DOOR_G1, Api, add_alert, demo_registry, make_settings, open_api

pytestmark = pytest.mark.integration


@pytest.fixture
def api(
    tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, influx_db: InfluxClient
) -> Iterator[Api]:
    sql_url = demo_registry(tmp_path)
    settings = make_settings(mosquitto, influxd, influx_db, sql_url, api_client_id="api-sqlite")
    with TestClient(create_app(settings)) as client:
        yield open_api(client, sql_url, influx_db)


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
