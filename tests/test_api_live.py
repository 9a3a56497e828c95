"""The API as a real server: commands round-trip to a simulated device, and the live stream."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import uvicorn
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from api import state as api_state
from api.app import create_app
from broker.address import BrokerAddress
from gridwatch.clock import SimulatedClock, WallClock
from influx.client import InfluxClient
from registry.db import make_engine, make_sessionmaker
from registry.records import load_communities, load_devices
from simulators.engine import Simulation
from simulators.fleet import Fleet
from stack.servers import Influxd, Mosquitto, free_port
from tests.test_api import (
    DOOR_G1,
    DOOR_G2,
    Api,
    add_alert,
    demo_registry,
    make_settings,
    open_api,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def served(
    tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, influx_db: InfluxClient
) -> Iterator[Api]:
    sql_url = demo_registry(tmp_path)
    settings = make_settings(
        mosquitto, influxd, influx_db, sql_url, api_client_id=f"api-{tmp_path.name}"
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield open_api(client, sql_url, influx_db)  # type: ignore[arg-type]
    server.should_exit = True
    thread.join(20)


@pytest.fixture
def simulated_door(mosquitto: Mosquitto, served: Api) -> Iterator[str]:
    """DOOR_G1 simulated on its own MQTT connection, answering commands."""
    with make_sessionmaker(make_engine(served.sql_url))() as session:
        communities = load_communities(session)
        records = [r for r in load_devices(session, "zjxc") if r.device_id == DOOR_G1]
    fleet = Fleet(BrokerAddress.from_url(mosquitto.url), qos=1)
    simulation = Simulation(
        communities,
        records,
        clock=SimulatedClock(WallClock().now_ms(), 1.0),
        seed=1,
        transport=fleet,
    )
    fleet.on_command = simulation.queue_command
    fleet.add(DOOR_G1, "zjxc", "door")
    fleet.wait_connected(10)
    stop = threading.Event()
    loop = threading.Thread(target=simulation.run, args=(None, stop), daemon=True)
    loop.start()
    time.sleep(0.5)  # its SUBACK
    yield DOOR_G1
    stop.set()
    loop.join(10)
    fleet.close()


def wait_for_status(api: Api, role: str, cmd_id: str, wanted: str) -> dict[str, Any]:
    """Poll a command until it reaches ``wanted``."""
    deadline = time.monotonic() + 15
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.get(role, f"/api/v1/commands/{cmd_id}").json()
        if body["status"] == wanted:
            return body
        time.sleep(0.1)
    raise AssertionError(f"{cmd_id} is {body.get('status')}, never {wanted}")


def test_a_grid_worker_unlocks_their_door_and_the_ack_comes_back(
    served: Api, simulated_door: str
) -> None:
    sent = served.post(
        "worker",
        f"/api/v1/devices/{simulated_door}/commands",
        json={"name": "unlock", "args": {"duration_s": 2}},
    )
    assert sent.status_code == 202, sent.text
    assert sent.json()["status"] in ("queued", "sent")
    done = wait_for_status(served, "worker", sent.json()["cmd_id"], "acknowledged")
    assert done["requested_by"] == "worker"
    assert done["args"] == {"duration_s": 2}
    assert done["sent_ms"] is not None and done["ack_ts"] <= done["expires_ms"]
    audit = served.get("operator", "/api/v1/commands", params={"device_id": simulated_door}).json()
    assert [c["cmd_id"] for c in audit["items"]] == [done["cmd_id"]]
    metrics = served.client.get("/metrics").text
    assert 'gridwatch_api_commands_total{status="acknowledged"} 1.0' in metrics


def test_commands_are_checked_and_scoped(served: Api, simulated_door: str) -> None:
    url = f"/api/v1/devices/{simulated_door}/commands"
    assert served.post("worker", url, json={"name": "explode"}).status_code == 422
    bad = served.post("worker", url, json={"name": "unlock", "args": {"duration_s": "long"}})
    assert bad.status_code == 422 and "args" in bad.json()["detail"]
    assert served.post("viewer", url, json={"name": "lock"}).status_code == 403
    # Another grid's door: not found, and nothing was stored or sent.
    other = served.post("worker", f"/api/v1/devices/{DOOR_G2}/commands", json={"name": "unlock"})
    assert other.status_code == 404
    assert served.get("admin", "/api/v1/commands").json()["total"] == 0


def test_a_command_nobody_answers_expires(served: Api) -> None:
    silent = "zjxc-door-b01-u2"  # registered, not simulated
    sent = served.post(
        "operator", f"/api/v1/devices/{silent}/commands", json={"name": "lock", "ttl_s": 1}
    ).json()
    expired = wait_for_status(served, "operator", sent["cmd_id"], "expired")
    assert expired["sent_ms"] is not None and expired["ack_ts"] is None


def _publish(mosquitto: Mosquitto, messages: list[tuple[str, dict[str, Any]]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    for topic, body in messages:
        client.publish(topic, json.dumps(body, ensure_ascii=False), qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_the_live_stream_carries_only_a_grid_workers_alerts_and_devices(
    served: Api, mosquitto: Mosquitto
) -> None:
    def alert(alert_id: int, grid: str) -> tuple[str, dict[str, Any]]:
        body = {"alert_id": alert_id, "transition": "opened", "community": "zjxc", "grid": grid}
        return "sc/zjxc/alerts", body

    now = WallClock().now_ms()
    events: list[tuple[str, dict[str, Any]]] = []
    headers = served.headers["worker"]
    with served.client.stream("GET", "/api/v1/live", headers=headers, timeout=20) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        time.sleep(0.3)
        _publish(
            mosquitto,
            [
                alert(1, "第二网格"),
                (f"sc/zjxc/door/{DOOR_G2}/status", {"online": False, "ts": now}),
                (f"sc/zjxc/door/{DOOR_G1}/status", {"online": False, "ts": now}),
                ("sc/zjxc/door/unregistered-door/status", {"online": False, "ts": now}),
                alert(2, "第一网格"),
            ],
        )
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind == "alert" and events[-1][1]["alert_id"] == 2:
                    break
    assert events == [
        (
            "status",
            {"device_id": DOOR_G1, "community": "zjxc", "kind": "door", "online": False, "ts": now},
        ),
        ("alert", {"alert_id": 2, "transition": "opened", "community": "zjxc", "grid": "第一网格"}),
    ]


def test_alert_lists_are_cached_until_an_alert_changes(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxd: Influxd,
    influx_db: InfluxClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A minute instead of a second: only the alert event can make the list fresh in time.
    monkeypatch.setattr(api_state, "ANSWER_TTL_S", 60.0)
    sql_url = demo_registry(tmp_path)
    settings = make_settings(mosquitto, influxd, influx_db, sql_url, api_client_id="api-pages")
    with TestClient(create_app(settings)) as client:
        api = open_api(client, sql_url, influx_db)

        def listed() -> list[tuple[int, str]]:
            items = api.get("operator", "/api/v1/alerts").json()["items"]
            return [(item["id"], item["status"]) for item in items]

        assert listed() == []
        new = add_alert(sql_url, "第一网格", DOOR_G1)
        assert listed() == []  # the page served a moment ago
        event = {"alert_id": new, "transition": "opened", "community": "zjxc", "grid": "第一网格"}
        deadline = time.monotonic() + 10
        while listed() == [] and time.monotonic() < deadline:
            _publish(mosquitto, [("sc/zjxc/alerts", event)])  # again: the API may not listen yet
            time.sleep(0.2)
        assert listed() == [(new, "open")]
        # A change made through the API shows at once.
        assert api.post("worker", f"/api/v1/alerts/{new}/acknowledge", json={}).status_code == 200
        assert listed() == [(new, "acknowledged")]
