"""Broker security against a real Mosquitto 2.0 with authentication, ACLs and TLS on.

The broker of this module is started with the files ``broker.files`` writes from
the registry, exactly as ``make run`` starts its own: passwords hashed by
gridwatch (not ``mosquitto_passwd``), the ACL of ``broker.acl``, a TLS listener
with the development CA of ``broker.tls``. Every test logs in as a device or a
service and checks what the broker lets through.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from alerts.routing import control_room_topic
from alerts.service import SUBSCRIPTION as ALERTS_SUBSCRIPTION
from api.dispatch import ACK_FILTER
from api.live import ALERTS_FILTER, STATUS_FILTER
from broker.accounts import hash_password, verify_password
from broker.acl import PRODUCTION_SERVICES, SIMULATOR
from broker.address import BrokerAddress
from broker.connection import make_client
from broker.credentials import issue_many, revoke
from broker.files import BrokerFiles, sync
from broker.subscriber import Subscriber
from broker.tls import DevCertificates, make_dev_ca
from devices import KINDS
from devices.contract import Channel, Community, DeviceRecord, device_topic
from gridwatch import cli
from gridwatch.clock import SimulatedClock, WallClock
from gridwatch.settings import get_settings
from imagery.events import CAMERA_SUBSCRIPTION, camera_topic
from imagery.service import SUBSCRIPTION as IMAGERY_SUBSCRIPTION
from influx.client import InfluxClient
from ingest.decode import Reason
from ingest.directory import StaticDevices
from ingest.service import SUBSCRIPTION as INGEST_SUBSCRIPTION
from ingest.service import IngestConfig, Ingestor
from registry.db import make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_file
from registry.records import load_communities, load_devices
from simulators.engine import Simulation
from simulators.fleet import Fleet
from stack.servers import LOOPBACK, Influxd, Mosquitto, find_binary, free_port
from tests.ingest_harness import stored, wait_ingested

pytestmark = pytest.mark.integration

WAIT_S = 10.0
# Quiet time after which a message that has not arrived is taken as never arriving.
SETTLE_S = 1.0
NOT_AUTHORISED = {0x86, 0x87}  # MQTT 5 CONNACK: bad user name or password, not authorised


@dataclass
class Secured:
    """The secured broker, the registry behind it, and the passwords issued."""

    broker: Mosquitto
    sql_url: str
    files: BrokerFiles
    certs: DevCertificates
    tls_port: int
    sessions: sessionmaker[Session]
    passwords: dict[str, str]
    devices: list[DeviceRecord]
    communities: list[Community]

    def device(self, kind: str, index: int = 0) -> DeviceRecord:
        """The ``index``-th registered device of ``kind``."""
        return [d for d in self.devices if d.kind == kind][index]

    def login(self, username: str, password: str | None = None, **kwargs: object) -> Client:
        """A connected client of ``username`` (with its issued password unless given)."""
        secret = self.passwords[username] if password is None else password
        client = Client(self.broker.port, username, secret, **kwargs)  # type: ignore[arg-type]
        assert client.connect() == 0, f"{username} was refused"
        return client

    def sync(self) -> None:
        """Write the files and reload the broker, as every credential change does."""
        with self.sessions() as session:
            assert sync(session, self.files).reloaded

    def reissue(self, username: str) -> str:
        """Issue ``username`` a new password and apply it; the old password."""
        with self.sessions() as session:
            (fresh,) = issue_many(session, [username], WallClock().now_ms())
            session.commit()
        self.sync()
        old, self.passwords[username] = self.passwords[username], fresh.password
        return old


class Client:
    """An MQTT 5 client that records its CONNACK, its messages and its disconnection."""

    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None,
        *,
        client_id: str = "",
        ca_file: str | None = None,
        tls: bool = False,
    ) -> None:
        self.port = port
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:10]}",
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
        )
        if username is not None:
            self.paho.username_pw_set(username, password)
        if tls:
            self.paho.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self.connack: queue.Queue[int] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.disconnected = threading.Event()
        self.paho.on_connect = self._on_connect
        self.paho.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.paho.on_disconnect = lambda *_: self.disconnected.set()

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self.connack.put(rc.value)

    def connect(self) -> int:
        """Connect; the CONNACK's reason code (0: accepted)."""
        self.paho.connect(LOOPBACK, self.port)
        self.paho.loop_start()
        return self.connack.get(timeout=WAIT_S)

    def subscribe(self, *topics: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK."""
        done = threading.Event()
        self.paho.on_subscribe = lambda *_: done.set()
        self.paho.subscribe([(t, 1) for t in topics])
        assert done.wait(WAIT_S)

    def publish(self, topic: str, payload: bytes = b"{}") -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        self.paho.publish(topic, payload, qos=1).wait_for_publish(WAIT_S)

    def received(self) -> list[str]:
        """The topics received until nothing more arrives for SETTLE_S."""
        topics = []
        while True:
            try:
                topics.append(self.messages.get(timeout=SETTLE_S)[0])
            except queue.Empty:
                return topics

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture(scope="module")
def secured(stack_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A broker with auth, ACL and TLS on; every service and the demo devices have accounts."""
    url = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'gridwatch.db'}"
    migrate(url)
    sessions = make_sessionmaker(make_engine(url))
    state = stack_root / f"mosquitto-secure-{uuid.uuid4().hex[:8]}"
    files = BrokerFiles(state / "auth", state / "mosquitto.pid")
    certs = make_dev_ca(state / "tls", ["localhost", LOOPBACK])
    with sessions() as session:
        import_file(session, DEMO_COMMUNITY_FILE)
        devices, communities = load_devices(session), load_communities(session)
        names = [*PRODUCTION_SERVICES, SIMULATOR, *(d.device_id for d in devices)]
        issued = issue_many(session, names, WallClock().now_ms())
        session.commit()
        sync(session, files)
    tls_port = free_port()
    broker = Mosquitto(
        state, extra_config=[*files.config_lines(), *certs.listener_lines(tls_port, LOOPBACK)]
    )
    with broker:
        yield Secured(
            broker,
            url,
            files,
            certs,
            tls_port,
            sessions,
            {i.username: i.password for i in issued},
            devices,
            communities,
        )


def _topic(device: DeviceRecord, channel: Channel) -> str:
    return device_topic(device.community, device.kind, device.device_id, channel)


# --- the password format ---------------------------------------------------------------------


def test_our_hash_is_mosquittos_format(tmp_path: Path) -> None:
    password_file = tmp_path / "passwords"
    tool = find_binary("mosquitto_passwd", "mosquitto")
    subprocess.run([tool, "-c", "-b", str(password_file), "alice", "s3cret"], check=True)
    theirs = password_file.read_text().strip().split(":", 1)[1]
    assert verify_password("s3cret", theirs)
    assert not verify_password("s3cret!", theirs)
    ours = hash_password("s3cret")
    assert ours.split("$")[1:3] == theirs.split("$")[1:3] == ["7", "101"]
    assert verify_password("s3cret", ours)
    assert not verify_password("s3cret", "$6$garbage$")


# --- logging in ------------------------------------------------------------------------------


def test_the_issued_password_logs_in_and_wrong_or_none_is_refused(secured: Secured) -> None:
    door = secured.device("door").device_id
    secured.login(door).close()
    refused = {
        "wrong password": Client(secured.broker.port, door, "not-the-password"),
        "anonymous": Client(secured.broker.port, None, None),
        "unknown user": Client(secured.broker.port, "intruder-1", "whatever"),
        "device as a service": Client(
            secured.broker.port, "gridwatch.ingest", secured.passwords[door]
        ),
    }
    for why, client in refused.items():
        assert client.connect() in NOT_AUTHORISED, why
        client.close()


# --- what each account may do ----------------------------------------------------------------


def test_a_device_publishes_only_to_its_own_topics(secured: Secured) -> None:
    a, b = secured.device("door", 0), secured.device("door", 1)
    ingest = secured.login("gridwatch.ingest")
    ingest.subscribe("sc/#")
    device = secured.login(a.device_id)
    allowed = [_topic(a, c) for c in (Channel.TELEMETRY, Channel.EVENT, Channel.STATUS)]
    allowed += [_topic(a, Channel.CMD_ACK), f"{_topic(a, Channel.SNAPSHOT)}/s-1"]
    forged = [_topic(b, c) for c in (Channel.TELEMETRY, Channel.EVENT, Channel.STATUS)]
    forged += [_topic(a, Channel.CMD), "sc/zjxc/alerts", f"sc/{a.community}/imagery"]
    for topic in [*forged, *allowed]:
        device.publish(topic)
    assert sorted(ingest.received()) == sorted(allowed)
    device.close()
    ingest.close()


def test_a_device_reads_only_its_own_commands(secured: Secured) -> None:
    a, b = secured.device("door", 2), secured.device("door", 3)
    device_a = secured.login(a.device_id)
    device_a.subscribe(_topic(b, Channel.CMD), _topic(a, Channel.CMD), "sc/#")
    device_b = secured.login(b.device_id)
    device_b.subscribe(_topic(b, Channel.CMD))
    api = secured.login("gridwatch.api")
    api.publish(_topic(b, Channel.CMD), b'{"cmd": "unlock"}')
    api.publish(_topic(a, Channel.CMD), b'{"cmd": "unlock"}')
    # The broker grants the subscription to B's topic (Mosquitto 2.0 checks reads at
    # delivery), but B's command never reaches A; A's arrives once per matching filter.
    assert set(device_a.received()) == {_topic(a, Channel.CMD)}
    assert device_b.received() == [_topic(b, Channel.CMD)]
    for client in (device_a, device_b, api):
        client.close()


def test_services_have_only_the_rights_they_need(secured: Secured) -> None:
    door = secured.device("door", 4)
    robot = secured.device("patrol_robot")
    witness = secured.login(SIMULATOR)
    witness.subscribe(_topic(door, Channel.CMD))
    observer = secured.login("gridwatch.alerts")
    observer.subscribe("sc/#")
    # Only the API sends commands; nobody but the device itself speaks for it.
    for service in ("gridwatch.ingest", "gridwatch.alerts", "gridwatch.imagery"):
        client = secured.login(service)
        client.publish(_topic(door, Channel.CMD), b'{"cmd": "unlock"}')
        client.publish(_topic(door, Channel.TELEMETRY))
        client.close()
    assert witness.received() == []
    # imagery publishes checkpoints as the robot's events; the API's commands pass.
    imagery = secured.login("gridwatch.imagery")
    imagery.publish(_topic(robot, Channel.EVENT))
    api = secured.login("gridwatch.api")
    api.publish(_topic(door, Channel.CMD))
    assert observer.received() == [_topic(robot, Channel.EVENT)]
    assert witness.received() == [_topic(door, Channel.CMD)]
    for client in (witness, observer, imagery, api):
        client.close()


def test_each_service_receives_what_it_subscribes_to_and_no_more(secured: Secured) -> None:
    """The services' real topic filters, against the ACL: what each is delivered."""
    robot, door = secured.device("patrol_robot"), secured.device("door", 8)
    subscriptions = {
        "gridwatch.ingest": [INGEST_SUBSCRIPTION],
        "gridwatch.alerts": [ALERTS_SUBSCRIPTION, CAMERA_SUBSCRIPTION],
        "gridwatch.imagery": [IMAGERY_SUBSCRIPTION],
        "gridwatch.api": [ACK_FILTER, ALERTS_FILTER, STATUS_FILTER],
    }
    services = {name: secured.login(name) for name in subscriptions}
    for name, filters in subscriptions.items():
        services[name].subscribe(*filters)
    sent: dict[str, list[str]] = {}
    for device in (robot, door):
        client = secured.login(device.device_id)
        channels = [Channel.TELEMETRY, Channel.EVENT, Channel.STATUS, Channel.CMD_ACK]
        sent[device.device_id] = [_topic(device, c) for c in channels]
        if device is robot:
            sent[robot.device_id].append(f"{_topic(robot, Channel.SNAPSHOT)}/s-2")
        for topic in sent[device.device_id]:
            client.publish(topic)
        client.close()
    services["gridwatch.api"].publish(_topic(door, Channel.CMD))
    services["gridwatch.alerts"].publish(control_room_topic(door.community))
    services["gridwatch.imagery"].publish(camera_topic(robot.community))
    from_devices = [*sent[robot.device_id], *sent[door.device_id]]
    assert sorted(services["gridwatch.ingest"].received()) == sorted(from_devices)
    camera_report = camera_topic(robot.community)
    assert sorted(services["gridwatch.alerts"].received()) == sorted([*from_devices, camera_report])
    imagery = [t for t in sent[robot.device_id] if "/event" in t or "/snapshot/" in t]
    assert sorted(services["gridwatch.imagery"].received()) == sorted(imagery)
    api = [t for t in from_devices if t.endswith(("/status", "/cmd_ack"))]
    api.append(control_room_topic(door.community))
    assert sorted(services["gridwatch.api"].received()) == sorted(api)
    for client in services.values():
        client.close()


def test_ingest_shares_its_subscription_with_its_replicas(secured: Secured) -> None:
    lamp = secured.device("streetlight")
    replicas = [secured.login("gridwatch.ingest") for _ in range(2)]
    for replica in replicas:
        replica.subscribe("$share/ingest/sc/+/+/+/#")
    device = secured.login(lamp.device_id)
    for _ in range(10):
        device.publish(_topic(lamp, Channel.TELEMETRY))
    assert sum(len(r.received()) for r in replicas) == 10
    for client in (*replicas, device):
        client.close()


# --- revocation ------------------------------------------------------------------------------


def test_a_revoked_device_is_cut_off_and_the_others_carry_on(secured: Secured) -> None:
    revoked, other = secured.device("water_meter", 0), secured.device("water_meter", 1)
    ingest = secured.login("gridwatch.ingest")
    ingest.subscribe("sc/#")
    victim = secured.login(revoked.device_id)
    bystander = secured.login(other.device_id)
    with secured.sessions() as session:
        revoke(session, revoked.device_id, WallClock().now_ms())
        session.commit()
    secured.sync()
    assert victim.disconnected.wait(WAIT_S), "the revoked device stayed connected"
    again = Client(secured.broker.port, revoked.device_id, secured.passwords[revoked.device_id])
    assert again.connect() in NOT_AUTHORISED
    again.close()
    bystander.publish(_topic(other, Channel.TELEMETRY))
    assert ingest.received() == [_topic(other, Channel.TELEMETRY)]
    assert not bystander.disconnected.is_set()
    for client in (ingest, victim, bystander):
        client.close()
    # Issued again (rotation restores a revoked account): it logs in with the new password.
    secured.reissue(revoked.device_id)
    secured.login(revoked.device_id).close()


def test_rotation_retires_the_old_password(secured: Secured) -> None:
    lamp = secured.device("streetlight", 1)
    old = secured.reissue(lamp.device_id)
    stale = Client(secured.broker.port, lamp.device_id, old)
    assert stale.connect() in NOT_AUTHORISED
    stale.close()
    secured.login(lamp.device_id).close()


# --- the command line ------------------------------------------------------------------------


def test_the_cli_issues_rotates_revokes_and_init_sets_service_passwords(
    secured: Secured, influxd: Influxd, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "GW_DATABASE_URL": secured.sql_url,
        "GW_INFLUX_URL": influxd.url,
        "GW_INFLUX_DB": f"cli_{uuid.uuid4().hex[:8]}",
        "GW_BROKER_AUTH_DIR": str(secured.files.directory),
        "GW_BROKER_PID_FILE": str(secured.files.pid_file),
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    runner, door = CliRunner(), secured.device("door", 9).device_id
    try:
        issued = runner.invoke(cli.app, ["broker", "credentials", "issue", door])
        assert issued.exit_code == 0, issued.output
        first = issued.output.split()[-1]
        secured.login(door, first).close()
        rotated = runner.invoke(cli.app, ["broker", "credentials", "rotate", door])
        assert rotated.output.split()[-2:-1] == [door]
        stale = Client(secured.broker.port, door, first)
        assert stale.connect() in NOT_AUTHORISED
        stale.close()
        secured.login(door, rotated.output.split()[-1]).close()
        revoked = runner.invoke(cli.app, ["broker", "credentials", "revoke", door])
        assert revoked.exit_code == 0 and f"revoked {door}\n" in revoked.output, revoked.output
        gone = Client(secured.broker.port, door, rotated.output.split()[-1])
        assert gone.connect() in NOT_AUTHORISED
        gone.close()
        listed = runner.invoke(cli.app, ["broker", "credentials", "list"]).output
        [row] = [line.split() for line in listed.splitlines() if line.startswith(f"{door} ")]
        assert row[1] == "device" and row[4] != "-", "revoked, with its time"
        unknown = runner.invoke(cli.app, ["broker", "credentials", "issue", "intruder-1"])
        assert unknown.exit_code == 2 and "neither a registered device" in unknown.output
        # init gives a service the password the deployment chose (compose: from .env).
        monkeypatch.setenv("GW_BROKER_API_PASSWORD", "chosen-by-the-operator")
        get_settings.cache_clear()
        assert runner.invoke(cli.app, ["init"]).exit_code == 0
        secured.login("gridwatch.api", "chosen-by-the-operator").close()
        secured.passwords["gridwatch.api"] = "chosen-by-the-operator"
        secured.reissue(door)
    finally:
        get_settings.cache_clear()


# --- TLS -------------------------------------------------------------------------------------


def test_tls_with_the_dev_ca_connects_and_without_it_fails(secured: Secured) -> None:
    door = secured.device("door", 5).device_id
    password = secured.passwords[door]
    trusted = Client(secured.tls_port, door, password, tls=True, ca_file=str(secured.certs.ca_cert))
    assert trusted.connect() == 0
    trusted.close()
    # A client that verifies against the system's CAs alone refuses the broker.
    with (
        socket.create_connection((LOOPBACK, secured.tls_port)) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")


def test_gridwatchs_clients_verify_the_broker_with_the_ca_of_the_url(secured: Secured) -> None:
    """A simulated device, a paho service and ingest's subscriber over TLS: the URL's CA."""
    door = secured.device("door", 7)
    tls = f"localhost:{secured.tls_port}?cafile={secured.certs.ca_cert}"
    service = BrokerAddress.from_url(
        f"mqtts://gridwatch.ingest:{secured.passwords['gridwatch.ingest']}@{tls}"
    )
    assert (service.tls, service.username, service.ca_file) == (
        True,
        "gridwatch.ingest",
        str(secured.certs.ca_cert),
    )
    received: queue.Queue[str] = queue.Queue()
    subscribed = threading.Event()
    ingest = make_client(service, f"tls-ingest-{uuid.uuid4().hex[:6]}")
    ingest.on_connect = lambda c, *_: c.subscribe("sc/#", qos=1)
    ingest.on_subscribe = lambda *_: subscribed.set()
    ingest.on_message = lambda _c, _u, m: received.put(m.topic)
    ingest.connect(service.host, service.port)
    ingest.loop_start()
    lean: queue.Queue[str] = queue.Queue()
    subscriber = Subscriber(
        service,
        f"tls-lean-{uuid.uuid4().hex[:6]}",
        "sc/+/+/+/#",
        lambda delivery: lean.put(delivery.topic),
        receive_maximum=10,
        session_expiry_s=0,
    )
    subscriber.start()
    try:
        assert subscribed.wait(WAIT_S) and subscriber.subscribed.wait(WAIT_S)
        fleet = Fleet(BrokerAddress.from_url(f"mqtts://{tls}"), credentials=secured.passwords)
        fleet.add(door.device_id, door.community, door.kind)
        fleet.wait_connected()
        fleet.publish(door.device_id, _topic(door, Channel.TELEMETRY), b"{}")
        assert fleet.flush(WAIT_S)
        fleet.close()
        assert received.get(timeout=WAIT_S) == _topic(door, Channel.TELEMETRY)
        assert lean.get(timeout=WAIT_S) == _topic(door, Channel.TELEMETRY)
    finally:
        subscriber.stop()
        ingest.disconnect()
        ingest.loop_stop()


# --- the demo community, end to end ----------------------------------------------------------


def test_the_demo_community_runs_end_to_end_with_security_on(
    secured: Secured, influx_db: InfluxClient
) -> None:
    """Every device logs in as itself; ingest with its own account stores all they publish."""
    ingest_address = BrokerAddress.from_url(
        f"mqtt://gridwatch.ingest:{secured.passwords['gridwatch.ingest']}@{LOOPBACK}:{secured.broker.port}"
    )
    ingestor = Ingestor(
        IngestConfig(broker=ingest_address, client_id=f"secure-ingest-{uuid.uuid4().hex[:6]}"),
        influx_db,
        StaticDevices({d.device_id: d for d in secured.devices}),
        WallClock(),
    )
    ingestor.start()
    try:
        assert ingestor.subscribed.wait(WAIT_S), "ingest never subscribed"
        now = WallClock().now_ms()
        fleet = Fleet(
            BrokerAddress.from_url(secured.broker.url), qos=1, credentials=secured.passwords
        )
        simulation = Simulation(
            secured.communities,
            secured.devices,
            clock=SimulatedClock(now - 3_600_000, speed=0),
            seed=11,
            transport=fleet,
        )
        fleet.on_command = simulation.queue_command
        for d in secured.devices:
            fleet.add(d.device_id, d.community, d.kind)
        fleet.wait_connected()
        simulation.announce(online=True)
        simulation.run(now, threading.Event())
        simulation.announce(online=False)
        # A device may use its own id under another kind: the ACL lets it through, and
        # ingest refuses it as not matching the registry (the second line of defence).
        door = secured.device("door", 6)
        liar = f"sc/{door.community}/streetlight/{door.device_id}/telemetry"
        payload = {
            "ts": now,
            "seq": 1,
            "locked": True,
            "open": False,
            "rssi_dbm": -70,
            "temp_c": 18.0,
        }
        fleet.publish(door.device_id, liar, json.dumps(payload).encode())
        assert fleet.flush(120), f"{fleet.unconfirmed} messages never confirmed by the broker"
        fleet.close()
        report = simulation.report
        metrics = ingestor.metrics
        wait_ingested(metrics, report.total + 1)
    finally:
        ingestor.stop()
    for (kind, channel), n in sorted(report.counts.items()):
        assert stored(influx_db, kind, Channel(channel)) == n, (kind, channel)
    assert {k for k, _ in report.counts} == set(KINDS)
    mismatches = sum(
        metrics.value(
            "gridwatch_ingest_rejected_total", reason=Reason.DEVICE_MISMATCH.value, kind=k
        )
        for k in [*KINDS, "unknown"]
    )
    assert mismatches == 1
