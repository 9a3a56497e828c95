"""API v1 against the real servers: authentication, roles, the registry, state, telemetry, alerts.

The demo community 张家新村 is loaded; grid g1 holds buildings 1 and 2, grid g2
building 3. Users of each role are made through the API itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url, select

from alerts.models import Alert
from api.app import create_app
from api.models import User
from api.routes.alerts import AlertPublic
from api.security import hash_password
from broker.accounts import verify_password
from devices.points import STATUS_MEASUREMENT
from gridwatch.clock import WallClock
from gridwatch.settings import MissingSecretError, Settings
from influx.client import InfluxClient
from influx.lineprotocol import Point, encode_batch
from registry.db import make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_file
from registry.models import Grid
from stack.servers import Influxd, Mosquitto

pytestmark = pytest.mark.integration

DOOR_G2 = "zjxc-door-b03-u2"  # building 3: grid g2
DOOR_G1 = "zjxc-door-b01-u1"  # building 1: grid g1
ADMIN_PASSWORD = "admin-password-for-tests"
SECRET = "k" * 40
LINK_KEY = "l" * 40


@dataclass
class Api:
    """A running app on the demo registry, and a bearer token per role."""

    client: TestClient
    sql_url: str
    influx: InfluxClient
    headers: dict[str, dict[str, str]]
    grids: dict[str, int]

    def get(self, role: str, url: str, **kw: Any) -> Any:
        """GET as ``role``."""
        return self.client.get(url, headers={**self.headers[role], **kw.pop("headers", {})}, **kw)

    def post(self, role: str, url: str, **kw: Any) -> Any:
        """POST as ``role``."""
        return self.client.post(url, headers={**self.headers[role], **kw.pop("headers", {})}, **kw)


def make_settings(
    mosquitto: Mosquitto, influxd: Influxd, influx_db: InfluxClient, sql_url: str, **kw: Any
) -> Settings:
    """Settings for an API on the test servers; its state (broker files) beside the registry."""
    kw.setdefault("state_dir", Path(make_url(sql_url).database or ".").parent)
    return Settings(
        mqtt_url=mosquitto.url,
        influx_url=influxd.url,
        influx_db=influx_db.database,
        database_url=sql_url,
        api_secret_key=SECRET,
        snapshot_link_key=LINK_KEY,
        env="production",
        **kw,
    )


def demo_registry(tmp_path: Path) -> str:
    """A SQLite registry with the demo community and one admin user."""
    sql_url = f"sqlite:///{tmp_path / 'gridwatch.db'}"
    migrate(sql_url)
    with make_sessionmaker(make_engine(sql_url))() as session:
        import_file(session, DEMO_COMMUNITY_FILE)
        session.add(
            User(
                username="root",
                role="admin",
                password_hash=hash_password(ADMIN_PASSWORD),
                active=True,
                created_ms=0,
            )
        )
        session.commit()
    return sql_url


def login(client: TestClient, username: str, password: str) -> dict[str, str]:
    """Bearer headers for a user."""
    response = client.post(
        "/api/v1/login/access-token", data={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def open_api(client: TestClient, sql_url: str, influx: InfluxClient) -> Api:
    """Log in as admin and make one user of every other role through the API."""
    admin = login(client, "root", ADMIN_PASSWORD)
    engine = make_engine(sql_url)
    with make_sessionmaker(engine)() as session:
        grids = {g.slug: g.id for g in session.scalars(select(Grid))}
    engine.dispose()
    users: dict[str, dict[str, Any]] = {
        "operator": {"role": "operator", "community": "zjxc"},
        "worker": {"role": "grid_worker", "community": "zjxc", "grids": [grids["g1"]]},
        "viewer": {"role": "viewer", "community": "zjxc"},
    }
    headers = {"admin": admin}
    for name, fields in users.items():
        body = {"username": name, "password": f"{name}-password", **fields}
        created = client.post("/api/v1/users", json=body, headers=admin)
        assert created.status_code == 201, created.text
        headers[name] = login(client, name, f"{name}-password")
    return Api(client, sql_url, influx, headers, grids)


@pytest.fixture
def api(
    tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, influx_db: InfluxClient
) -> Iterator[Api]:
    sql_url = demo_registry(tmp_path)
    settings = make_settings(mosquitto, influxd, influx_db, sql_url)
    with TestClient(create_app(settings)) as client:
        yield open_api(client, sql_url, influx_db)


def add_alert(
    sql_url: str, grid: str, device_id: str, rule: str = "door.forced", **fields: Any
) -> int:
    """An open alert routed to ``grid`` (by name, as the alerts service routes).

    ``fields`` replace the defaults (a door's forced-open alert, opened now).
    """
    now = WallClock().now_ms()
    engine = make_engine(sql_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            defaults: dict[str, Any] = {
                "community_id": "zjxc",
                "rule": rule,
                "kind": "door",
                "subject": device_id,
                "device_id": device_id,
                "severity": "critical",
                "status": "open",
                "title": "单元门被强行打开",
                "action": "请立即到现场查看",
                "place": "张家新村",
                "grid": grid,
                "facts": {},
                "open_key": f"{rule}|{device_id}",
                "auto_resolve": False,
                "occurrences": 1,
                "since_ms": now,
                "opened_ms": now,
                "last_ms": now,
            }
            alert = Alert(**(defaults | fields))
            session.add(alert)
            session.flush()
            return alert.id
    finally:
        engine.dispose()


# --- operations and authentication ----------------------------------------------------


def assert_broker_login(api: Api, credentials: dict[str, str]) -> None:
    """The device's login, once: its hash in the broker's password file, the password nowhere.

    Rotation replaces the hash; revocation takes the device out of the file.
    """
    device, password = credentials["mqtt_username"], credentials["mqtt_password"]
    passwords = Path(make_url(api.sql_url).database or ".").parent / "mosquitto/auth/passwords"
    entries = dict(line.split(":", 1) for line in passwords.read_text().splitlines())
    assert verify_password(password, entries[device])
    admin = api.headers["admin"]
    rotated = api.client.post(f"/api/v1/devices/{device}/credentials", headers=admin).json()
    entries = dict(line.split(":", 1) for line in passwords.read_text().splitlines())
    assert verify_password(rotated["mqtt_password"], entries[device])
    assert not verify_password(password, entries[device])
    url = f"/api/v1/devices/{device}/credentials"
    assert api.client.delete(url, headers=admin).status_code == 204
    assert device not in passwords.read_text()
    assert api.client.delete(url, headers=admin).status_code == 404
    assert api.client.post(url, headers=api.headers["operator"]).status_code == 403


def test_health_reports_every_dependency(api: Api) -> None:
    body = api.client.get("/health").json()
    assert set(body["checks"]) == {"broker", "influxdb", "database"}
    assert body["checks"]["influxdb"]["ok"] and body["checks"]["database"]["ok"]


def test_health_is_503_when_influxdb_is_unreachable(tmp_path: Path, mosquitto: Mosquitto) -> None:
    settings = Settings(
        mqtt_url=mosquitto.url,
        influx_url="http://127.0.0.1:9",
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
    )
    migrate(settings.sql_url)
    with TestClient(create_app(settings)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["influxdb"]["ok"] is False


def test_metrics_count_requests_by_route_template(api: Api) -> None:
    api.get("viewer", f"/api/v1/devices/{DOOR_G2}")
    text = api.client.get("/metrics").text
    assert 'route="/api/v1/devices/{device_id}"' in text
    assert "gridwatch_api_request_seconds_bucket" in text
    assert DOOR_G2 not in text


def test_every_api_route_needs_credentials(api: Api) -> None:
    for path in ("/api/v1/devices", "/api/v1/alerts", "/api/v1/users/me", "/api/v1/communities"):
        response = api.client.get(path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    forged = {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."}
    assert api.client.get("/api/v1/users/me", headers=forged).status_code == 401


def test_wrong_password_and_deactivated_users_are_refused(api: Api) -> None:
    bad = api.client.post(
        "/api/v1/login/access-token", data={"username": "root", "password": "nope-nope"}
    )
    assert bad.status_code == 401
    viewer = api.get("admin", "/api/v1/users", params={"role": "viewer"}).json()["items"][0]
    api.client.patch(
        f"/api/v1/users/{viewer['id']}", json={"active": False}, headers=api.headers["admin"]
    )
    assert api.get("viewer", "/api/v1/users/me").status_code == 401


def test_api_keys_are_shown_once_stored_hashed_and_revocable(api: Api) -> None:
    me = api.get("operator", "/api/v1/users/me").json()
    assert me["role"] == "operator" and me["community"] == "zjxc"
    issued = api.post("admin", f"/api/v1/users/{me['id']}/api-keys", json={"name": "wall"})
    assert issued.status_code == 201
    key = issued.json()["key"]
    assert key.startswith("gw_")
    assert "key" not in api.get("admin", f"/api/v1/users/{me['id']}/api-keys").json()[0]
    with make_sessionmaker(make_engine(api.sql_url))() as session:
        from api.models import ApiKey

        stored = session.scalars(select(ApiKey)).one()
        assert key.split("_", 2)[2] not in stored.secret_hash
    as_key = api.client.get("/api/v1/users/me", headers={"X-API-Key": key})
    assert as_key.json()["username"] == "operator"
    assert api.client.get("/api/v1/users/me", headers={"X-API-Key": key + "x"}).status_code == 401
    revoked = api.client.delete(
        f"/api/v1/users/{me['id']}/api-keys/{issued.json()['id']}", headers=api.headers["admin"]
    )
    assert revoked.status_code == 204
    assert api.client.get("/api/v1/users/me", headers={"X-API-Key": key}).status_code == 401


def test_only_admins_manage_users(api: Api) -> None:
    for role in ("operator", "worker", "viewer"):
        assert api.get(role, "/api/v1/users").status_code == 403
        body = {"username": "x", "role": "admin", "password": "long-enough"}
        assert api.post(role, "/api/v1/users", json=body).status_code == 403


def test_production_refuses_to_start_without_a_secret(tmp_path: Path, mosquitto: Mosquitto) -> None:
    settings = Settings(
        env="production", mqtt_url=mosquitto.url, database_url=f"sqlite:///{tmp_path / 'x.db'}"
    )
    with (
        pytest.raises(MissingSecretError, match="GW_API_SECRET_KEY"),
        TestClient(create_app(settings)),
    ):
        pass
    with pytest.raises(ValueError, match="at least 32"):
        Settings(api_secret_key="short")


def test_development_mode_makes_an_admin_with_a_password_in_a_file(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    settings = Settings(
        env="development",
        state_dir=tmp_path,
        mqtt_url=mosquitto.url,
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
    )
    migrate(settings.sql_url)
    with TestClient(create_app(settings)) as client:
        password_file = tmp_path / "dev-admin-password"
        assert password_file.stat().st_mode & 0o077 == 0
        headers = login(client, "admin", password_file.read_text().strip())
        assert client.get("/api/v1/users/me", headers=headers).json()["role"] == "admin"


# --- the registry -------------------------------------------------------------------------


def test_registry_lists_are_paginated_and_filtered(api: Api) -> None:
    page = api.get("viewer", "/api/v1/devices", params={"kind": "door", "limit": 10}).json()
    assert page["total"] == 112 and len(page["items"]) == 10
    nxt = api.get("viewer", "/api/v1/devices", params={"kind": "door", "offset": 10}).json()
    assert nxt["items"][0]["device_id"] > page["items"][-1]["device_id"]
    building = api.get("viewer", "/api/v1/devices", params={"building": "3"}).json()
    assert {d["building"] for d in building["items"]} == {"3"}
    assert api.get("viewer", "/api/v1/grids").json()["total"] == 4
    assert (
        api.get("viewer", "/api/v1/buildings", params={"grid": api.grids["g1"]}).json()["total"]
        == 9
    )
    assert api.get("viewer", "/api/v1/units", params={"limit": 1}).json()["total"] > 100
    assert api.get("viewer", "/api/v1/grid-workers").json()["total"] > 4
    assert api.get("viewer", "/api/v1/communities").json()["items"][0]["name"] == "张家新村"
    assert api.get("viewer", "/api/v1/devices", params={"limit": 501}).status_code == 422


def test_registry_crud_round_trip(api: Api) -> None:
    community = {"id": "tst", "name": "测试小区", "lat": 36.8, "lon": 118.0}
    assert api.post("admin", "/api/v1/communities", json=community).status_code == 201
    assert api.post("admin", "/api/v1/communities", json=community).status_code == 409
    grid = api.post("admin", "/api/v1/grids", json={"community": "tst", "slug": "a", "name": "A"})
    grid_id = grid.json()["id"]
    building = api.post(
        "admin",
        "/api/v1/buildings",
        json={"community": "tst", "number": "1", "grid": grid_id, "lat": 36.8, "lon": 118.0},
    ).json()
    unit = api.post(
        "admin", "/api/v1/units", json={"building": building["id"], "number": "1", "households": 6}
    ).json()
    household = api.post(
        "admin",
        "/api/v1/households",
        json={
            "unit": unit["id"],
            "room": "101",
            "resident": {"name": "张三", "phone": "13900000001"},
        },
    )
    assert household.status_code == 201
    worker = api.post(
        "admin",
        "/api/v1/grid-workers",
        json={
            "community": "tst",
            "grid": grid_id,
            "name": "赵六",
            "phone": "13900000009",
            "channels": [{"type": "webhook", "url": "http://127.0.0.1:9/h", "secret": "s3cret"}],
        },
    )
    assert worker.json()["channels"][0]["secret"] == "***"
    device = api.post(
        "admin",
        "/api/v1/devices",
        json={
            "community": "tst",
            "id": "tst-wm-1",
            "kind": "water_meter",
            "building": "1",
            "unit": "1",
            "room": "101",
        },
    )
    assert device.status_code == 201, device.text
    assert device.json()["place"] == "1号楼1单元101"
    assert_broker_login(api, device.json()["credentials"])
    no_unit = {"community": "tst", "id": "tst-door-x", "kind": "door", "building": "1"}
    assert api.post("admin", "/api/v1/devices", json=no_unit).status_code == 422
    bad_attrs = {
        "community": "tst",
        "id": "tst-lamp",
        "kind": "streetlight",
        "lat": 1,
        "lon": 1,
        "attributes": {"circuit": "A", "rated_power_w": "lots"},
    }
    assert api.post("admin", "/api/v1/devices", json=bad_attrs).status_code == 422
    patched = api.client.patch(
        "/api/v1/devices/tst-wm-1", json={"place": "一楼东"}, headers=api.headers["admin"]
    )
    assert patched.json()["place"] == "一楼东"
    # The unit holds a device: the database refuses to drop it.
    delete_unit = api.client.delete(f"/api/v1/units/{unit['id']}", headers=api.headers["admin"])
    assert delete_unit.status_code == 409
    assert api.get("admin", "/api/v1/devices/tst-wm-1/latest").json()["online"] is None
    assert (
        api.client.delete("/api/v1/devices/tst-wm-1", headers=api.headers["admin"]).status_code
        == 204
    )
    # The API's registry cache forgets what the API itself changed, at once.
    assert api.get("admin", "/api/v1/devices/tst-wm-1/latest").status_code == 404
    assert (
        api.client.delete("/api/v1/communities/tst", headers=api.headers["admin"]).status_code
        == 204
    )
    assert api.get("admin", "/api/v1/communities/tst").status_code == 404


def test_only_admins_change_the_registry(api: Api) -> None:
    body = {"community": "zjxc", "slug": "g9", "name": "第九网格"}
    for role in ("operator", "worker", "viewer"):
        assert api.post(role, "/api/v1/grids", json=body).status_code == 403
        assert (
            api.client.delete(f"/api/v1/devices/{DOOR_G1}", headers=api.headers[role]).status_code
            == 403
        )


def import_yaml(api: Api, text: str) -> Any:
    """A community file, as YAML, imported by the admin through the API."""
    return api.post(
        "admin",
        "/api/v1/communities/import",
        content=text.encode(),
        headers={"Content-Type": "application/yaml"},
    )


def test_a_community_file_is_imported_as_yaml(api: Api) -> None:
    text = DEMO_COMMUNITY_FILE.read_text(encoding="utf-8").replace("zjxc", "zjxd")
    response = import_yaml(api, text)
    assert response.status_code == 200, response.text
    assert response.json()["devices"] == 342
    broken = api.post("admin", "/api/v1/communities/import", json={"community": {"id": "x"}})
    assert broken.status_code == 422
    assert any("grids" in problem for problem in broken.json()["detail"])


def test_personal_data_is_masked_for_viewers_only(api: Api) -> None:
    full = api.get("operator", "/api/v1/households", params={"limit": 500}).json()["items"]
    masked = api.get("viewer", "/api/v1/households", params={"limit": 500}).json()["items"]
    named = [h for h in full if h["resident"]["name"]]
    assert named, "the demo has residents"
    shown = next(h for h in masked if h["id"] == named[0]["id"])
    assert shown["masked"] is True
    assert shown["resident"]["name"] == named[0]["resident"]["name"][0] + "*" * (
        len(named[0]["resident"]["name"]) - 1
    )
    assert "****" in (shown["resident"]["phone"] or "****")
    workers = api.get("viewer", "/api/v1/grid-workers").json()["items"]
    assert all("****" in w["phone"] for w in workers)


# --- grid scope ------------------------------------------------------------------------------


def test_a_grid_worker_sees_only_their_grids(api: Api) -> None:
    devices = api.get("worker", "/api/v1/devices", params={"limit": 500}).json()["items"]
    assert DOOR_G1 in {d["device_id"] for d in devices}
    assert DOOR_G2 not in {d["device_id"] for d in devices}
    assert api.get("worker", f"/api/v1/devices/{DOOR_G2}").status_code == 404
    assert api.get("worker", f"/api/v1/devices/{DOOR_G2}/latest").status_code == 404
    buildings = api.get("worker", "/api/v1/buildings", params={"limit": 500}).json()["items"]
    assert {b["grid"] for b in buildings} == {api.grids["g1"]}
    households = api.get("worker", "/api/v1/households", params={"limit": 500}).json()
    assert 0 < households["total"] < api.get("operator", "/api/v1/households").json()["total"]


def test_community_scope_hides_other_communities(api: Api) -> None:
    assert api.get("operator", "/api/v1/devices", params={"community": "other"}).status_code == 403
    assert api.get("viewer", "/api/v1/communities/other").status_code == 404


# --- device state ----------------------------------------------------------------------------


def write_door(influx: InfluxClient, device_id: str, building: str, unit: str, now: int) -> None:
    """Two readings and an online status of a door."""
    tags = {"community": "zjxc", "device_id": device_id, "building": building, "unit": unit}
    influx.write(
        encode_batch(
            [
                Point("door", tags, {"seq": 1, "locked": True, "open": False}, now - 60_000),
                Point("door", tags, {"seq": 2, "locked": False, "open": True}, now),
                Point(STATUS_MEASUREMENT, {**tags, "kind": "door"}, {"online": True}, now - 90_000),
            ]
        )
    )


def test_latest_state_of_a_device(api: Api) -> None:
    now = WallClock().now_ms()
    write_door(api.influx, DOOR_G2, "3", "2", now)
    body = api.get("viewer", f"/api/v1/devices/{DOOR_G2}/latest").json()
    assert body["place"] == "3号楼2单元"
    assert body["online"] is True
    assert body["last_seen_ms"] == now
    assert body["values"] == {"seq": 2, "locked": False, "open": True}


def test_unknown_device_is_404(api: Api) -> None:
    assert api.get("admin", "/api/v1/devices/nobody/latest").status_code == 404


@pytest.mark.parametrize("hostile", ["a'b", 'a"b', "x' OR '1'='1", "a b", "a;DROP"])
def test_hostile_device_ids_are_refused_before_any_query(api: Api, hostile: str) -> None:
    assert api.get("admin", f"/api/v1/devices/{hostile}/latest").status_code == 422


def test_latest_state_per_kind_and_online_ratios(api: Api) -> None:
    now = WallClock().now_ms()
    write_door(api.influx, DOOR_G2, "3", "2", now)
    write_door(api.influx, DOOR_G1, "1", "1", now)
    page = api.get("operator", "/api/v1/state/latest", params={"kind": "door", "limit": 500}).json()
    assert page["total"] == 112
    seen = {s["device_id"]: s for s in page["items"] if s["online"] is not None}
    assert set(seen) == {DOOR_G1, DOOR_G2}
    ratios = {r["kind"]: r for r in api.get("operator", "/api/v1/state/online").json()}
    assert ratios["door"]["registered"] == 112 and ratios["door"]["online"] == 2
    assert ratios["door"]["unknown"] == 110
    worker = {r["kind"]: r for r in api.get("worker", "/api/v1/state/online").json()}
    assert worker["door"]["online"] == 1 and worker["door"]["registered"] < 112


# --- telemetry -------------------------------------------------------------------------------


def test_history_of_a_day_at_one_minute(api: Api) -> None:
    now = WallClock().now_ms() // 60_000 * 60_000
    tags = {"community": "zjxc", "device_id": "zjxc-lamp-a001", "circuit": "A"}
    points = [
        Point(
            "streetlight", tags, {"seq": i, "power_w": float(i % 100), "on": True}, now - i * 60_000
        )
        for i in range(1, 1441)
    ]
    api.influx.write(encode_batch(points))
    body = api.get(
        "viewer",
        "/api/v1/telemetry/history",
        params={"device_id": "zjxc-lamp-a001", "field": "power_w", "fn": "max", "every": "1m"},
    ).json()
    assert body["columns"] == ["time", "power_w"]
    (series,) = body["series"]
    assert series["device_id"] == "zjxc-lamp-a001"
    assert len(series["points"]) in (1439, 1440)
    group = api.get(
        "viewer",
        "/api/v1/telemetry/history",
        params={
            "community": "zjxc",
            "kind": "streetlight",
            "field": "power_w",
            "every": "1h",
            "per_device": "false",
        },
    ).json()
    assert group["series"][0]["device_id"] is None and len(group["series"][0]["points"]) >= 24


INJECTIONS = [
    "x' OR 1=1 --",
    '"; DROP MEASUREMENT "door',
    'power_w") FROM door; DROP DATABASE x; --',
    '1m) ; SELECT * FROM "door" --',
    'mean("power_w")',
    "\\' OR \\'1",
    "power_w\n",
]


@pytest.mark.parametrize(
    "param",
    ["device_id", "field", "fn", "every", "start", "end", "community", "kind", "per_device"],
)
def test_injection_attempts_in_every_telemetry_parameter_are_refused(api: Api, param: str) -> None:
    base = {"device_id": "zjxc-lamp-a001", "field": "power_w"}
    for attack in INJECTIONS:
        params = {**base, param: attack}
        if param in ("community", "kind"):
            params = {"field": "power_w", "community": "zjxc", "kind": "streetlight", param: attack}
        response = api.get("admin", "/api/v1/telemetry/history", params=params)
        assert response.status_code in (400, 404, 422), (param, attack, response.text)
    # InfluxDB was never handed a query: the database and its data are intact.
    assert api.influx.query("SHOW DATABASES")


def test_history_limits_say_what_to_change(api: Api) -> None:
    params = {"device_id": "zjxc-lamp-a001", "field": "power_w"}
    long = api.get(
        "viewer",
        "/api/v1/telemetry/history",
        params={
            **params,
            "every": "10s",
            "start": "2026-01-01T00:00:00Z",
            "end": "2026-01-20T00:00:00Z",
        },
    )
    assert long.status_code == 400 and "at most" in long.json()["detail"]
    too_long = api.get(
        "viewer",
        "/api/v1/telemetry/history",
        params={
            **params,
            "every": "1d",
            "start": "2025-01-01T00:00:00Z",
            "end": "2026-01-01T00:00:00Z",
        },
    )
    assert too_long.status_code == 400 and "days" in too_long.json()["detail"]
    backwards = api.get(
        "viewer",
        "/api/v1/telemetry/history",
        params={**params, "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
    )
    assert backwards.status_code == 400
    unknown = api.get(
        "viewer", "/api/v1/telemetry/history", params={**params, "field": "secret_field"}
    )
    assert unknown.status_code == 400 and "no telemetry field" in unknown.json()["detail"]
    not_a_number = api.get(
        "viewer", "/api/v1/telemetry/history", params={**params, "field": "fault", "fn": "mean"}
    )
    assert not_a_number.status_code == 400
    mixed = api.get(
        "viewer",
        "/api/v1/telemetry/history",
        params={"device_id": ["zjxc-lamp-a001", DOOR_G1], "field": "power_w"},
    )
    assert mixed.status_code == 400
    other_grid = api.get(
        "worker", "/api/v1/telemetry/history", params={"device_id": DOOR_G2, "field": "temp_c"}
    )
    assert other_grid.status_code == 404


# --- alerts ----------------------------------------------------------------------------------


def test_alerts_list_filter_read_and_lifecycle(api: Api) -> None:
    first = add_alert(api.sql_url, "第一网格", DOOR_G1)
    second = add_alert(api.sql_url, "第二网格", DOOR_G2)
    listed = api.get("operator", "/api/v1/alerts").json()
    assert [a["id"] for a in listed["items"]] == [second, first]
    g1 = api.get("operator", "/api/v1/alerts", params={"grid": api.grids["g1"]}).json()
    assert [a["id"] for a in g1["items"]] == [first]
    assert api.get("operator", "/api/v1/alerts", params={"severity": "minor"}).json()["total"] == 0
    assert api.get("operator", "/api/v1/alerts", params={"status": "bogus"}).status_code == 422
    ack = api.post("operator", f"/api/v1/alerts/{second}/acknowledge", json={"note": "已派人"})
    assert ack.status_code == 200 and ack.json()["acknowledged_by"] == "operator"
    assert api.post("operator", f"/api/v1/alerts/{second}/acknowledge", json={}).status_code == 409
    comment = api.post("operator", f"/api/v1/alerts/{second}/comments", json={"text": "已到现场"})
    assert comment.status_code == 201 and comment.json()["comments"][0]["text"] == "已到现场"
    done = api.post("admin", f"/api/v1/alerts/{second}/resolve", json={"note": "已关门"})
    assert done.json()["status"] == "resolved" and done.json()["resolved_by"] == "root"
    detail = api.get("viewer", f"/api/v1/alerts/{second}").json()
    assert [t["transition"] for t in detail["transitions"]] == ["acknowledged", "resolved"]
    assert {n["channel"] for n in detail["notifications"]} >= {"mqtt"}
    assert api.post("viewer", f"/api/v1/alerts/{first}/acknowledge", json={}).status_code == 403


def test_alert_pages_are_newest_first_with_every_field_of_an_alert(api: Api) -> None:
    ids = [add_alert(api.sql_url, "第一网格", DOOR_G1, rule=f"door.rule_{n}") for n in "abcde"]
    page = api.get("operator", "/api/v1/alerts", params={"offset": 1, "limit": 2}).json()
    assert (page["total"], page["offset"], page["limit"]) == (5, 1, 2)
    assert [a["id"] for a in page["items"]] == ids[::-1][1:3]
    assert list(page["items"][0]) == list(AlertPublic.model_fields)
    assert AlertPublic.model_validate(page["items"][0]).rule == "door.rule_d"
    both = api.get("operator", "/api/v1/alerts", params={"rule": "door.rule_b"}).json()
    assert [a["id"] for a in both["items"]] == [ids[1]]
    since = api.get("operator", "/api/v1/alerts", params={"since_ms": 1, "limit": 500}).json()
    assert since["total"] == 5
    assert api.get("operator", "/api/v1/alerts", params={"until_ms": 1}).json()["total"] == 0


def test_a_grid_worker_cannot_read_or_act_on_another_grids_alert(api: Api) -> None:
    mine = add_alert(api.sql_url, "第一网格", DOOR_G1)
    theirs = add_alert(api.sql_url, "第二网格", DOOR_G2)
    listed = api.get("worker", "/api/v1/alerts").json()
    assert [a["id"] for a in listed["items"]] == [mine]
    assert api.get("worker", f"/api/v1/alerts/{theirs}").status_code == 404
    for action in ("acknowledge", "resolve"):
        assert api.post("worker", f"/api/v1/alerts/{theirs}/{action}", json={}).status_code == 404
    assert (
        api.post("worker", f"/api/v1/alerts/{theirs}/comments", json={"text": "x"}).status_code
        == 404
    )
    assert api.post("worker", f"/api/v1/alerts/{mine}/acknowledge", json={}).status_code == 200
