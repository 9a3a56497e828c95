"""The simulators' own MQTT 3.1.1 client, packet by packet and against the real Mosquitto.

A paho client subscribes alongside as an independent witness of what the
broker received.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.address import BrokerAddress
from simulators.fleet import Fleet
from simulators.mqtt import (
    CONNACK,
    PUBLISH,
    Packet,
    PacketReader,
    Will,
    connect_packet,
    encode_length,
    parse_publish,
    publish_packet,
    utf8_field,
)
from stack.servers import Mosquitto, free_port

# --- packets, without a broker --------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152])
def test_remaining_length_round_trips_even_when_read_byte_by_byte(length: int) -> None:
    body = bytes(i % 251 for i in range(length))
    packet = bytes((CONNACK << 4,)) + encode_length(length) + body
    reader = PacketReader()
    got: list[Packet] = []
    # Byte by byte would take minutes for 2 MB: split at the header, then in large pieces.
    pieces = [packet[i : i + 1] for i in range(5)] + [packet[5:][:70_000], packet[5:][70_000:]]
    for piece in pieces:
        got += reader.feed(piece)
    assert got == [Packet(CONNACK, 0, body)]
    assert reader.empty


def test_encoded_lengths_use_the_fewest_bytes() -> None:
    assert [len(encode_length(n)) for n in (127, 128, 16_383, 16_384, 2_097_152)] == [1, 2, 2, 3, 4]
    with pytest.raises(ValueError, match="out of range"):
        encode_length(268_435_456)


def test_connect_packet_says_protocol_4_persistent_session_and_will() -> None:
    will = Will("s/t", b"off")
    packet = connect_packet(
        "d1", keepalive=60, clean_session=False, will=will, username="u", password="p"
    )
    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04  # user, password, will retain, will QoS 1, will
    body = (
        b"\x00\x04MQTT\x04"
        + bytes((flags,))
        + b"\x00\x3c"
        + b"\x00\x02d1"
        + b"\x00\x03s/t\x00\x03off"
        + b"\x00\x01u\x00\x01p"
    )
    assert packet == b"\x10" + encode_length(len(body)) + body


def test_publish_packets_parse_back() -> None:
    for qos, packet_id in ((0, 0), (1, 513)):
        raw = publish_packet(utf8_field("sc/a/b"), b"{}", qos=qos, retain=True, packet_id=packet_id)
        (packet,) = PacketReader().feed(raw)
        assert packet.type == PUBLISH and packet.flags == (qos << 1 | 1)
        assert parse_publish(packet) == ("sc/a/b", packet_id, b"{}")


# --- against the real broker -----------------------------------------------------------


class Witness:
    """A paho subscriber that keeps what it receives."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"w-{uuid.uuid4().hex}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, data: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def wait_until(self, check: Callable[[list[tuple[str, bytes, bool]]], bool]) -> bool:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with self._lock:
                snapshot = list(self.messages)
            if check(snapshot):
                return True
            time.sleep(0.02)
        return False

    def received(self, topic_part: str, where: str = "") -> list[dict[str, object]]:
        """Payloads published since it subscribed (not retained ones from earlier tests) on
        topics containing ``topic_part``, whose text contains ``where``."""
        with self._lock:
            found = [
                p
                for t, p, retained in self.messages
                if topic_part in t and where.encode() in p and not retained
            ]
        return [json.loads(p) for p in found]

    def wait_for(self, topic_part: str, where: str = "") -> dict[str, object]:
        """The latest such payload, once there is one."""
        assert self.wait_until(lambda _: bool(self.received(topic_part, where))), (
            f"nothing on {topic_part} with {where!r}"
        )
        return self.received(topic_part, where)[-1]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def community() -> str:
    """A community slug of the test's own: no retained messages or sessions from other tests."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def witness(mosquitto: Mosquitto, community: str) -> Iterator[Witness]:
    w = Witness(mosquitto, f"sc/{community}/#")
    yield w
    w.close()


def _fleet(broker: Mosquitto, community: str, ids: list[str], **kw: object) -> Fleet:
    fleet = Fleet(BrokerAddress.from_url(broker.url), **kw)  # type: ignore[arg-type]
    for device_id in ids:
        fleet.add(device_id, community, "door")
    fleet.wait_connected(10)
    return fleet


def _pump(fleet: Fleet, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fleet.poll(0.02)


@pytest.mark.integration
@pytest.mark.parametrize("qos", [0, 1])
def test_every_message_arrives_in_order_per_device(
    mosquitto: Mosquitto, community: str, witness: Witness, qos: int
) -> None:
    ids = [f"{community}-d{i}" for i in range(3)]
    fleet = _fleet(mosquitto, community, ids, qos=qos)
    per_device = 3000
    for seq in range(per_device):
        for device_id in ids:
            topic = f"sc/{community}/door/{device_id}/telemetry"
            fleet.publish(device_id, topic, json.dumps({"seq": seq}).encode())
    big = json.dumps({"seq": per_device, "pad": "x" * 20_000}).encode()  # a 3-byte length
    fleet.publish(ids[0], f"sc/{community}/door/{ids[0]}/telemetry", big)
    assert fleet.flush(30) and fleet.unconfirmed == 0
    assert witness.wait_until(lambda m: len(m) == 3 * per_device + 1)
    for device_id in ids:
        seqs = [json.loads(p)["seq"] for t, p, _ in witness.messages if f"/{device_id}/" in t]
        assert seqs == list(range(per_device + (device_id == ids[0]))), device_id
    fleet.close()


@pytest.mark.integration
def test_an_unclean_drop_fires_the_will_and_the_device_comes_back(
    mosquitto: Mosquitto, community: str, witness: Witness
) -> None:
    device_id = f"{community}-d"
    status = f"sc/{community}/door/{device_id}/status"
    telemetry = f"sc/{community}/door/{device_id}/telemetry"
    fleet = _fleet(mosquitto, community, [device_id], qos=1)
    fleet.publish(device_id, status, b'{"online":true,"ts":1}', retain=True)
    assert fleet.flush(10)
    fleet.drop(device_id)
    assert witness.wait_until(lambda m: (status, b'{"online":false}', False) in m)
    fleet.publish(device_id, telemetry, b'{"seq":1}')  # while away: kept for the reconnect
    _pump(fleet, 2.5)  # a dropped device is not reconnected behind the scenario's back
    assert fleet.unconfirmed == 1
    fleet.restore(device_id)
    assert fleet.flush(10)
    assert witness.wait_until(lambda m: (telemetry, b'{"seq":1}', False) in m)
    fleet.close()


@pytest.mark.integration
def test_a_clean_close_sends_no_will(
    mosquitto: Mosquitto, community: str, witness: Witness
) -> None:
    device_id = f"{community}-d"
    fleet = _fleet(mosquitto, community, [device_id])
    fleet.close()
    time.sleep(1.0)
    assert not [m for m in witness.messages if m[0].endswith("/status")]


@pytest.mark.integration
def test_commands_are_received_acknowledged_and_kept_while_away(
    mosquitto: Mosquitto, community: str
) -> None:
    device_id = f"{community}-d"
    cmd_topic = f"sc/{community}/door/{device_id}/cmd"
    received: list[tuple[str, bytes]] = []
    fleet = _fleet(mosquitto, community, [device_id])
    fleet.on_command = lambda d, p: received.append((d, p))
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"s-{community}")
    sender.connect("127.0.0.1", mosquitto.port)
    sender.loop_start()
    _pump(fleet, 0.3)  # let the SUBACK arrive
    sender.publish(cmd_topic, b"first", qos=1).wait_for_publish(5)
    _pump(fleet, 0.5)
    assert received == [(device_id, b"first")]
    fleet.drop(device_id)
    sender.publish(cmd_topic, b"second", qos=1).wait_for_publish(5)
    fleet.restore(device_id)
    _pump(fleet, 0.5)
    # The persistent session kept "second"; "first" was acknowledged, so it never comes back.
    assert received == [(device_id, b"first"), (device_id, b"second")]
    fleet.close()
    sender.disconnect()
    sender.loop_stop()


@pytest.mark.integration
def test_keepalive_pings_hold_an_idle_connection_open(
    mosquitto: Mosquitto, community: str, witness: Witness
) -> None:
    device_id = f"{community}-d"
    fleet = _fleet(mosquitto, community, [device_id], keepalive=1)
    _pump(fleet, 4.0)  # Mosquitto drops a client silent for 1.5 keepalives
    assert not [m for m in witness.messages if m[0].endswith("/status")], "the will fired"
    fleet.close()


@pytest.mark.integration
def test_devices_sharing_a_connection_get_their_own_commands(
    mosquitto: Mosquitto, community: str
) -> None:
    ids = [f"{community}-d{i}" for i in range(4)]
    received: list[str] = []
    fleet = _fleet(mosquitto, community, ids, devices_per_connection=4)
    fleet.on_command = lambda d, p: received.append(d)
    _pump(fleet, 0.3)
    for device_id in reversed(ids):
        subprocess.run(
            ["mosquitto_pub", "-p", str(mosquitto.port), "-q", "1", "-m", "{}", "-t",
             f"sc/{community}/door/{device_id}/cmd"],
            check=True,
        )  # fmt: skip
    _pump(fleet, 0.5)
    assert received == list(reversed(ids))
    with pytest.raises(ValueError, match="no last will"):
        fleet.drop(ids[0])
    fleet.close()


@pytest.mark.integration
def test_a_refused_login_names_the_reason_and_credentials_are_sent(server_dir: Path) -> None:
    server_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(server_dir / "passwd"), "sim", "s3cret"], check=True
    )
    config = ["allow_anonymous false", f"password_file {server_dir / 'passwd'}"]
    with Mosquitto(server_dir, extra_config=config) as broker:
        anonymous = Fleet(BrokerAddress.from_url(broker.url))
        anonymous.add("d1", "t", "door")
        with pytest.raises(ConnectionError, match="not authorized"):
            anonymous.wait_connected(5)
        url = f"mqtt://sim:s3cret@127.0.0.1:{broker.port}"
        fleet = Fleet(BrokerAddress.from_url(url))
        fleet.add("d1", "t", "door")
        fleet.wait_connected(5)
        fleet.close()


@pytest.mark.integration
def test_tls_with_the_brokers_certificate(server_dir: Path) -> None:
    server_dir.mkdir(parents=True, exist_ok=True)
    cert, key = server_dir / "server.crt", server_dir / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    listener = [f"listener {port} 127.0.0.1", f"certfile {cert}", f"keyfile {key}"]
    with Mosquitto(server_dir, extra_config=listener) as broker:
        witness = Witness(broker, "sc/tls/#")
        fleet = Fleet(BrokerAddress(host="127.0.0.1", port=port, tls=True), ca_file=str(cert))
        fleet.add("d1", "tls", "door")
        fleet.wait_connected(5)
        for seq in range(500):
            fleet.publish("d1", "sc/tls/door/d1/telemetry", json.dumps({"seq": seq}).encode())
        assert fleet.flush(10)
        assert witness.wait_until(lambda m: len(m) == 500)
        fleet.close()
        witness.close()
