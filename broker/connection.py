"""Build paho-mqtt 2.x clients for a broker address (``mqtt://user:pass@host:port``, ``mqtts://``)."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.address import BrokerAddress


def make_client(
    address: BrokerAddress,
    client_id: str = "",
    *,
    v5: bool = False,
    manual_ack: bool = False,
    ca_file: str | None = None,
) -> mqtt.Client:
    """A paho client configured for ``address`` (not yet connected)."""
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        manual_ack=manual_ack,
        reconnect_on_failure=True,
    )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set(ca_certs=ca_file or address.ca_file, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def persistent_session_properties(expiry_s: int, receive_maximum: int) -> Properties:
    """CONNECT properties of an MQTT 5 persistent session that bounds its own in-flight window."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry_s
    props.ReceiveMaximum = receive_maximum
    return props
