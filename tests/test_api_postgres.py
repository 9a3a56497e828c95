"""The API on PostgreSQL, as deployed: reads on worker threads, writes, the one-statement list."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from api.cli import add_user
from imagery.files import ImageFiles
from influx.client import InfluxClient
from registry.db import make_engine
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_file
from stack.servers import Influxd, Mosquitto, Postgres
from tests.test_api import ADMIN_PASSWORD, DOOR_G1, DOOR_G2, Api, add_alert, make_settings, open_api
from tests.test_api_snapshots import store_snapshot, transaction

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_api(
    tmp_path: Path,
    postgres: Postgres,
    mosquitto: Mosquitto,
    influxd: Influxd,
    influx_db: InfluxClient,
) -> Iterator[Api]:
    name = f"api_{uuid.uuid4().hex[:12]}"
    sql_url = postgres.create_database(name)
    settings = make_settings(
        mosquitto,
        influxd,
        influx_db,
        sql_url,
        api_client_id=f"api-{name}",
        imagery_dir=str(tmp_path / "imagery"),
    )
    list(add_user(settings, "root", "admin", None, [], ADMIN_PASSWORD, api_key=False))
    with transaction(sql_url) as session:
        import_file(session, DEMO_COMMUNITY_FILE)
    with TestClient(create_app(settings)) as client:
        yield open_api(client, sql_url, influx_db)
    admin = make_engine(postgres.url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_alerts_snapshots_and_state_on_postgresql(pg_api: Api, tmp_path: Path) -> None:
    first = add_alert(pg_api.sql_url, "第一网格", DOOR_G1)
    second = add_alert(pg_api.sql_url, "第二网格", DOOR_G2)
    page = pg_api.get("operator", "/api/v1/alerts", params={"limit": 1}).json()
    assert (page["total"], [a["id"] for a in page["items"]]) == (2, [second])
    assert pg_api.get("operator", "/api/v1/alerts", params={"rule": "door.none"}).json() == {
        "items": [],
        "total": 0,
        "offset": 0,
        "limit": 50,
    }
    mine = pg_api.get("worker", "/api/v1/alerts").json()
    assert [a["id"] for a in mine["items"]] == [first]
    ack = pg_api.post("worker", f"/api/v1/alerts/{first}/acknowledge", json={})
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    latest = pg_api.get("operator", f"/api/v1/devices/{DOOR_G1}/latest")
    assert latest.status_code == 200 and latest.json()["online"] is None
    stored = store_snapshot(
        pg_api.sql_url, ImageFiles(tmp_path / "imagery"), "s-pg", "smoke_fire", 1_795_000_000_000
    )
    listed = pg_api.get("viewer", "/api/v1/snapshots").json()
    assert [s["id"] for s in listed["items"]] == [stored.id]
    image = pg_api.get("viewer", f"/api/v1/snapshots/{stored.id}/privacy.jpg")
    assert image.status_code == 200 and image.content.startswith(b"\xff\xd8")
    assert pg_api.get("worker", f"/api/v1/snapshots/{stored.id}").status_code == 404
