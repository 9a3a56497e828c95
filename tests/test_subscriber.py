"""The ingest subscriber's wire format, and its acks against a real Mosquitto."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from broker.address import BrokerAddress
from broker.subscriber import (
    Delivery,
    ProtocolError,
    Subscriber,
    connect_packet,
    decode_varint,
    encode_varint,
    puback_packets,
)
from stack.servers import Mosquitto


@given(st.integers(0, 268_435_455))
def test_varints_round_trip(n: int) -> None:
    encoded = encode_varint(n)
    assert len(encoded) <= 4
    assert decode_varint(b"\xff" + encoded + b"tail", 1) == (n, 1 + len(encoded))


def test_a_varint_cut_short_waits_for_more_bytes_and_a_fifth_byte_is_an_error() -> None:
    assert decode_varint(b"\x80\x80", 0) is None
    with pytest.raises(ProtocolError):
        decode_varint(b"\x80\x80\x80\x80\x01", 0)


def test_connect_asks_for_a_persistent_session_with_a_bounded_window() -> None:
    packet = connect_packet(
        "ingest-1",
        keepalive_s=30,
        session_expiry_s=600,
        receive_maximum=500,
        maximum_packet_size=1 << 20,
    )
    assert packet[0] == 0x10
    assert b"\x00\x04MQTT\x05\x00" in packet  # version 5, no clean start, no credentials
    assert b"\x11\x00\x00\x02\x58" in packet and b"\x21\x01\xf4" in packet
    assert packet.endswith(b"\x00\x08ingest-1")


def test_pubacks_of_a_batch_go_out_as_one_buffer_in_order() -> None:
    assert puback_packets([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"


@pytest.mark.integration
def test_acks_from_an_old_connection_are_never_sent_on_a_new_one(stack_root: Path) -> None:
    """After a reconnect the broker redelivers; only the new copy's ack may go out."""
    received: list[Delivery] = []
    arrived = threading.Condition()

    def on_message(delivery: Delivery) -> None:
        with arrived:
            received.append(delivery)
            arrived.notify_all()

    def wait_for(count: int, timeout: float) -> bool:
        with arrived:
            return arrived.wait_for(lambda: len(received) >= count, timeout)

    with Mosquitto(stack_root / f"mosquitto-sub-{uuid.uuid4().hex[:8]}") as broker:
        address = BrokerAddress.from_url(broker.url)
        subscriber = Subscriber(address, "sub-test", "sub-test/#", on_message, receive_maximum=10)
        subscriber.start()
        assert subscriber.subscribed.wait(10)
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2)
        publisher.connect(address.host, address.port)
        publisher.publish("sub-test/a", b"1", qos=1)
        publisher.loop(1)
        publisher.disconnect()
        assert wait_for(1, 5)
        broker.restart()  # the unacknowledged message stays in the saved session
        assert wait_for(2, 15), "the broker did not redeliver after the reconnect"
        first, second = received
        assert second.payload == first.payload and second.generation == first.generation + 1
        sent: list[bytes] = []
        send = subscriber._send

        def recording_send(data: bytes, generation: int | None = None) -> None:
            sent.append(data)
            send(data, generation)

        subscriber._send = recording_send  # type: ignore[method-assign]
        subscriber.ack([first])  # from the old connection: must be dropped
        assert sent == []
        subscriber.ack([second])
        assert sent == [puback_packets([second.packet_id])]
        time.sleep(0.5)
        broker.restart()
        assert subscriber.subscribed.wait(15)
        assert not wait_for(3, 3), "an acknowledged message came back"
        subscriber.stop()


@pytest.mark.integration
def test_a_session_that_joins_a_share_group_drops_its_plain_subscription(
    stack_root: Path,
) -> None:
    """An ingest replica moved into a share group must not get every message twice."""
    received: list[Delivery] = []

    def subscribe(topic_filter: str) -> Subscriber:
        subscriber = Subscriber(
            address, "sub-share", topic_filter, received.append, receive_maximum=10
        )
        subscriber.start()
        assert subscriber.subscribed.wait(10)
        return subscriber

    with Mosquitto(stack_root / f"mosquitto-share-{uuid.uuid4().hex[:8]}") as broker:
        address = BrokerAddress.from_url(broker.url)
        subscribe("share-test/#").stop()
        subscriber = subscribe("$share/ingest/share-test/#")
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2)
        publisher.connect(address.host, address.port)
        publisher.publish("share-test/a", b"1", qos=1)
        publisher.loop(1)
        publisher.disconnect()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            time.sleep(0.1)
        subscriber.ack(received)
        subscriber.stop()
        assert [d.payload for d in received] == [b"1"]
