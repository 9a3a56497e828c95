"""The local stack's servers, run for real: start, stop, restart, and a first use of each."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from influx.client import InfluxClient, quote_ident
from stack.servers import (
    LOOPBACK,
    Influxd,
    MissingBinary,
    Mosquitto,
    Postgres,
    ServerError,
    find_binary,
    free_port,
)

pytestmark = pytest.mark.integration

WAIT_S = 10.0


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def now_ms() -> int:
    """Now, in ms since the epoch: recent enough for any retention policy."""
    return time.time_ns() // 1_000_000


@contextmanager
def connected(
    port: int,
    client_id: str = "",
    *,
    clean_session: bool = True,
    inbox: queue.Queue[mqtt.MQTTMessage] | None = None,
) -> Iterator[mqtt.Client]:
    """A paho client, its network loop running, once the broker has accepted it.

    Messages go to ``inbox``, from the CONNACK on: a resumed session's queue comes at once.
    """
    accepted = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
    )

    def on_connect(_c: object, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        if not reason.is_failure:
            accepted.set()

    client.on_connect = on_connect
    if inbox is not None:
        client.on_message = lambda _c, _u, message: inbox.put(message)
    client.connect(LOOPBACK, port)
    client.loop_start()
    try:
        assert accepted.wait(WAIT_S), "no CONNACK accepting the client"
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


@contextmanager
def subscribed(
    port: int, topic: str, client_id: str = "", *, clean_session: bool = True
) -> Iterator[queue.Queue[mqtt.MQTTMessage]]:
    """The messages a QoS 1 subscription to ``topic`` receives."""
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    acked = threading.Event()
    with connected(port, client_id, clean_session=clean_session, inbox=inbox) as client:
        client.on_subscribe = lambda *_: acked.set()
        client.subscribe(topic, qos=1)
        assert acked.wait(WAIT_S), "no SUBACK"
        yield inbox


def publish(port: int, topic: str, payload: bytes, *, retain: bool = False) -> None:
    """Publish one QoS 1 message and wait for the broker's PUBACK."""
    with connected(port) as client:
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_S)
        assert info.is_published()


def test_mosquitto_round_trip_at_qos1(mosquitto: Mosquitto) -> None:
    topic = unique("gw-test")
    with subscribed(mosquitto.port, topic) as messages:
        publish(mosquitto.port, topic, b"hello")
        message = messages.get(timeout=WAIT_S)
    assert (message.topic, message.payload, message.qos) == (topic, b"hello", 1)
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"


def test_mosquitto_keeps_a_retained_message_across_restart(server_dir: Path) -> None:
    topic = unique("gw-test")
    with Mosquitto(server_dir) as broker:
        publish(broker.port, topic, b"kept", retain=True)
        port = broker.port
        broker.restart()
        assert broker.port == port
        with subscribed(broker.port, topic) as messages:
            message = messages.get(timeout=WAIT_S)
    assert (message.payload, message.retain) == (b"kept", True)
    assert not broker.running


def test_mosquitto_keeps_an_offline_session_queue_across_restart(server_dir: Path) -> None:
    topic, client_id = unique("gw-test"), unique("gw-ingest")
    with Mosquitto(server_dir) as broker:
        with subscribed(broker.port, topic, client_id, clean_session=False):
            pass
        publish(broker.port, topic, b"queued while offline")
        broker.restart()
        with subscribed(broker.port, topic, client_id, clean_session=False) as messages:
            assert messages.get(timeout=WAIT_S).payload == b"queued while offline"


def test_mosquitto_applies_extra_config_lines(server_dir: Path) -> None:
    mosquitto_pub = find_binary("mosquitto_pub", "mosquitto-clients")
    with Mosquitto(server_dir, extra_config=["allow_anonymous false"]) as broker:
        refused = subprocess.run(
            [mosquitto_pub, "-p", str(broker.port), "-t", "gw-test", "-m", "x"],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            check=False,
        )
    assert refused.returncode != 0
    assert "not authorised" in refused.stderr


def test_a_server_that_cannot_start_reports_its_log(server_dir: Path) -> None:
    broker = Mosquitto(server_dir, extra_config=["no_such_option 1"])
    with pytest.raises(ServerError, match="exited with status") as failure:
        broker.start()
    assert "no_such_option" in str(failure.value)
    assert not broker.running


def test_start_refuses_a_port_in_use(server_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, free_port()))
        squatter.listen()
        broker = Mosquitto(server_dir, squatter.getsockname()[1])
        with pytest.raises(ServerError, match="already in use"):
            broker.start()


def test_stop_kills_a_server_that_ignores_sigterm(server_dir: Path) -> None:
    broker = Mosquitto(server_dir)
    broker.start()
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGSTOP)
    broker.stop(timeout=0.5)
    assert not broker.running
    assert broker.pid is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, broker.port), timeout=WAIT_S)


def test_a_missing_program_says_how_to_install_it() -> None:
    with pytest.raises(MissingBinary, match=r"no-such-package.*make system"):
        find_binary("gridwatch-no-such-server", "no-such-package")


def test_influxd_writes_and_queries(influx_db: InfluxClient) -> None:
    ts = now_ms()
    influx_db.write(
        f"door,device_id=d1 battery=87i {ts}\ndoor,device_id=d2 battery=3i {ts}".encode()
    )
    series = influx_db.query('SELECT "battery" FROM "door" GROUP BY "device_id"')
    assert {s.name for s in series} == {"door"}
    rows = {s.tags["device_id"]: s.records() for s in series}
    assert rows == {"d1": [{"time": ts, "battery": 87}], "d2": [{"time": ts, "battery": 3}]}


def test_influxd_ensure_database_twice_is_harmless(influxd: Influxd) -> None:
    with InfluxClient(influxd.url, unique("test")) as client:
        client.ensure_database("400d")
        client.ensure_database("400d")
        [policies] = client.query(f"SHOW RETENTION POLICIES ON {quote_ident(client.database)}")
        client.query(f"DROP DATABASE {quote_ident(client.database)}")
    defaults = [row["name"] for row in policies.records() if row["default"]]
    assert defaults == ["gridwatch"]


def test_influxd_keeps_data_across_stop_and_start(server_dir: Path) -> None:
    ts = now_ms()
    with Influxd(server_dir) as server, InfluxClient(server.url, "gridwatch") as client:
        client.ensure_database("400d")
        client.write(f"meter kwh=1.5 {ts}".encode())
        server.stop()
        assert not client.ping()
        server.start()
        [series] = client.query('SELECT "kwh" FROM "meter"')
    assert series.records() == [{"time": ts, "kwh": 1.5}]


def test_postgres_creates_a_database_the_gridwatch_role_can_use(postgres: Postgres) -> None:
    url = postgres.create_database(unique("test"))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
            assert conn.execute(text("SELECT current_user")).scalar_one() == postgres.user
    finally:
        engine.dispose()


def test_postgres_refuses_a_wrong_password(postgres: Postgres) -> None:
    intruder = create_engine(make_url(postgres.url).set(password="wrong"))
    try:
        with pytest.raises(OperationalError, match="password authentication failed"):
            intruder.connect()
    finally:
        intruder.dispose()


def test_postgres_keeps_data_across_restart(server_dir: Path) -> None:
    with Postgres(server_dir, fsync=False) as server:
        engine = create_engine(server.url)
        try:
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE kept (v int)"))
                conn.execute(text("INSERT INTO kept VALUES (42)"))
            engine.dispose()
            server.restart()
            with engine.connect() as conn:
                assert conn.execute(text("SELECT v FROM kept")).scalar_one() == 42
                assert conn.execute(text("SELECT current_database()")).scalar_one() == "gridwatch"
        finally:
            engine.dispose()
