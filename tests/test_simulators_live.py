"""Simulations over the real Mosquitto: commands and their acks, a city over processes, and a
scenario's unclean disconnect seen from the broker's side."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker.address import BrokerAddress
from devices import KINDS
from gridwatch.clock import SimulatedClock, WallClock
from registry.db import make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_file
from simulators.engine import Simulation
from simulators.fleet import Fleet
from simulators.runner import Request, simulate
from stack.servers import Mosquitto
from tests.contract_helpers import COMMUNITY, record
from tests.test_simulators_mqtt import Witness

pytestmark = pytest.mark.integration


@pytest.fixture
def witness(mosquitto: Mosquitto) -> Iterator[Witness]:
    w = Witness(mosquitto, "sc/#")
    yield w
    w.close()


def _command(witness: Witness, topic: str, name: str, args: dict[str, object], ttl_ms: int) -> str:
    now = WallClock().now_ms()
    cmd_id = f"c-{uuid.uuid4().hex[:8]}"
    body = {"cmd_id": cmd_id, "ts": now, "name": name, "args": args, "expires_ts": now + ttl_ms}
    witness.client.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)
    return cmd_id


def test_commands_round_trip_and_change_what_devices_report(
    mosquitto: Mosquitto, witness: Witness
) -> None:
    uid = uuid.uuid4().hex[:8]
    devices = {kind: replace(record(kind), device_id=f"{uid}-{kind}") for kind in KINDS}
    fleet = Fleet(BrokerAddress.from_url(mosquitto.url), qos=1)
    simulation = Simulation(
        [COMMUNITY],
        devices.values(),
        clock=SimulatedClock(WallClock().now_ms(), 1.0),
        seed=1,
        transport=fleet,
    )
    fleet.on_command = simulation.queue_command
    for d in devices.values():
        fleet.add(d.device_id, d.community, d.kind)
    fleet.wait_connected(10)
    stop = threading.Event()
    loop = threading.Thread(target=simulation.run, args=(None, stop))
    loop.start()
    try:
        base = {k: f"sc/zjxc/{k}/{d.device_id}" for k, d in devices.items()}
        time.sleep(0.5)  # the SUBACKs
        sent = _command(witness, f"{base['door']}/cmd", "unlock", {"duration_s": 2}, 60_000)
        assert witness.wait_for(f"{base['door']}/cmd_ack", sent)["ok"] is True
        assert witness.wait_for(f"{base['door']}/event", '"remote"')["event"] == "unlock"
        witness.wait_for(f"{base['door']}/event", '"close"')

        sent = _command(
            witness, f"{base['streetlight']}/cmd", "set_light", {"on": True, "dim_pct": 40}, 60_000
        )
        assert witness.wait_for(f"{base['streetlight']}/cmd_ack", sent)["ok"] is True
        switched = witness.wait_for(f"{base['streetlight']}/event", '"command"')
        assert (switched["on"], switched["dim_pct"]) == (True, 40)

        sent = _command(
            witness, f"{base['water_meter']}/cmd", "set_valve", {"valve": "closed"}, 60_000
        )
        assert witness.wait_for(f"{base['water_meter']}/cmd_ack", sent)["ok"] is True
        assert witness.wait_for(f"{base['water_meter']}/telemetry", '"closed"')["flow_lpm"] == 0

        robot = devices["patrol_robot"].attributes
        target = {"lat": robot["dock_lat"] + 0.001, "lon": robot["dock_lon"]}
        sent = _command(witness, f"{base['patrol_robot']}/cmd", "dispatch", target, 60_000)
        assert witness.wait_for(f"{base['patrol_robot']}/cmd_ack", sent)["ok"] is True
        assert witness.wait_for(f"{base['patrol_robot']}/telemetry", '"returning"')

        sent = _command(witness, f"{base['door']}/cmd", "lock", {}, -1)  # already expired
        time.sleep(1.0)
        assert not witness.received(f"{base['door']}/cmd_ack", sent)
    finally:
        stop.set()
        loop.join(10)
        fleet.close()


def _registry(tmp_path: Path, demo: bool) -> str:
    url = f"sqlite:///{tmp_path / 'gridwatch.db'}"
    migrate(url)
    if demo:
        with make_sessionmaker(make_engine(url))() as session:
            import_file(session, DEMO_COMMUNITY_FILE)
            session.commit()
    return url


def test_a_city_is_registered_and_shared_out_over_processes(
    mosquitto: Mosquitto, witness: Witness, tmp_path: Path
) -> None:
    url = _registry(tmp_path, demo=False)
    request = Request(city=2, hours=0.25, speed=0, follow=False, processes=2)
    report = simulate(request, url, mosquitto.url, threading.Event())
    assert sum(report.devices.values()) == 2 * 342

    def received() -> list[str]:
        city = ("sc/zb-001/", "sc/zb-002/")
        return [t for t, _, _ in list(witness.messages) if t.startswith(city)]

    # QoS 1: every message reached the broker, and from it the witness.
    assert witness.wait_until(lambda _: len(received()) >= report.total)
    assert len(received()) == report.total
    assert {t.split("/")[1] for t in received()} == {"zb-001", "zb-002"}
    assert report.by_kind()["streetlight"] >= 2 * 169 * 15  # a reading a minute each


def test_a_scenario_drops_the_connection_and_the_broker_sends_the_will(
    mosquitto: Mosquitto, witness: Witness, tmp_path: Path
) -> None:
    url = _registry(tmp_path, demo=True)
    scenario = tmp_path / "blip.yaml"
    scenario.write_text(
        "description: a door drops off and comes back\n"
        "community: zjxc\n"
        "duration: 30m\n"
        "faults: [{at: +10m, fault: offline, target: zjxc-door-b09-u4, duration: 5m}]\n"
    )
    report = simulate(
        Request(scenario=scenario, speed=0, follow=False), url, mosquitto.url, threading.Event()
    )
    assert report.by_kind()["streetlight"] >= 169 * 29  # the whole community, half an hour
    witness.wait_for("zjxc-door-b09-u4/status", '"online":false,"ts"')  # the clean stop
    status = witness.received("sc/zjxc/door/zjxc-door-b09-u4/status")
    # online at the start, the broker's will (no ts), back online, offline at the clean stop
    assert [(s["online"], "ts" in s) for s in status] == [
        (True, True),
        (False, False),
        (True, True),
        (False, True),
    ]
