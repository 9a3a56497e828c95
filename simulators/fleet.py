"""Many device connections driven by one thread.

Each simulated device has its own MQTT connection, as a real one does, so it
has its own last will (``{"online": false}``, retained, on its status topic)
and its own ``cmd`` subscription. paho clients are driven without their
threads: one selector reads every socket, and ``loop_misc`` keeps them alive.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from broker.connection import BrokerAddress, make_client
from devices.contract import Channel, device_topic

log = logging.getLogger("gridwatch.simulate")

OFFLINE_WILL = b'{"online":false}'
RECONNECT_EVERY_S = 2.0
MISC_EVERY_S = 1.0

CommandHandler = Callable[[str, bytes], None]


def _drop_command(device_id: str, payload: bytes) -> None:
    log.debug("%s: command received before a handler was set", device_id)


@dataclass(slots=True)
class _Conn:
    device_id: str
    community: str
    kind: str
    client: mqtt.Client
    sock: socket.socket | None = None
    connected: bool = False
    unconfirmed: int = 0
    last_attempt: float = field(default=0.0)


class Fleet:
    """One MQTT connection per device; ``publish`` is non-blocking, ``poll`` does the I/O."""

    def __init__(self, broker: BrokerAddress, qos: int = 1) -> None:
        self.broker = broker
        self.qos = qos
        self.on_command: CommandHandler = _drop_command
        self._conns: dict[str, _Conn] = {}
        self._selector = selectors.DefaultSelector()
        self._last_misc = 0.0
        self._write_pending: set[str] = set()
        self.unconfirmed = 0

    # --- connections --------------------------------------------------------------

    def add(self, device_id: str, community: str, kind: str) -> None:
        """Open the device's connection, with its last will."""
        client = make_client(self.broker, device_id)
        # paho's default of 20 unacknowledged messages stalls a device replaying history.
        client.max_inflight_messages_set(1000)
        status = device_topic(community, kind, device_id, Channel.STATUS)
        client.will_set(status, OFFLINE_WILL, qos=1, retain=True)
        conn = _Conn(device_id, community, kind, client)
        client.user_data_set(conn)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._conns[device_id] = conn
        self._connect(conn)

    def _connect(self, conn: _Conn) -> None:
        conn.last_attempt = time.monotonic()
        try:
            # clean_session=False: commands sent while the device was away are kept for it.
            conn.client.connect(self.broker.host, self.broker.port, keepalive=60)
        except OSError as exc:
            log.debug("%s cannot connect: %s", conn.device_id, exc)
            return
        self._track_socket(conn)

    def _track_socket(self, conn: _Conn) -> None:
        sock = conn.client.socket()
        if sock is conn.sock:
            return
        if conn.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        conn.sock = sock if isinstance(sock, socket.socket) else None
        if conn.sock is not None:
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def wait_connected(self, timeout: float = 30.0) -> None:
        """Poll until every device has its CONNACK; raise if some never get it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(0.05)
            if all(c.connected for c in self._conns.values()):
                return
        missing = [c.device_id for c in self._conns.values() if not c.connected]
        raise ConnectionError(f"{len(missing)} devices could not connect, e.g. {missing[:3]}")

    def _on_connect(
        self, client: mqtt.Client, conn: _Conn, flags: object, reason: ReasonCode, props: object
    ) -> None:
        if reason.is_failure:
            log.error("%s refused by broker: %s", conn.device_id, reason)
            return
        conn.connected = True
        client.subscribe(
            device_topic(conn.community, conn.kind, conn.device_id, Channel.CMD), qos=1
        )

    def _on_disconnect(
        self, client: mqtt.Client, conn: _Conn, flags: object, reason: ReasonCode, props: object
    ) -> None:
        conn.connected = False

    def _on_message(self, client: mqtt.Client, conn: _Conn, message: mqtt.MQTTMessage) -> None:
        self.on_command(conn.device_id, bytes(message.payload))

    def _on_publish(
        self, client: mqtt.Client, conn: _Conn, mid: int, reason: ReasonCode, props: object
    ) -> None:
        conn.unconfirmed -= 1
        self.unconfirmed -= 1

    # --- traffic ------------------------------------------------------------------

    def publish(self, device_id: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Queue a message on the device's connection (sent now if the socket takes it)."""
        conn = self._conns[device_id]
        info = conn.client.publish(topic, payload, qos=self.qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.qos == 0:
            return  # QoS 0 while offline is lost, as on a real device
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise ConnectionError(f"{device_id}: publish failed: {mqtt.error_string(info.rc)}")
        conn.unconfirmed += 1
        self.unconfirmed += 1
        if conn.client.want_write():  # the socket buffer was full: poll() finishes the write
            self._write_pending.add(device_id)

    def poll(self, timeout: float) -> None:
        """Read what arrived (acks, commands), flush writes, keep alive, reconnect."""
        for key, _ in self._selector.select(timeout):
            conn: _Conn = key.data
            if conn.client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._track_socket(conn)
        for device_id in list(self._write_pending):
            client = self._conns[device_id].client
            client.loop_write()
            if not client.want_write():
                self._write_pending.discard(device_id)
        now = time.monotonic()
        if now - self._last_misc >= MISC_EVERY_S:
            self._last_misc = now
            self._housekeeping(now)

    def _housekeeping(self, now: float) -> None:
        for conn in self._conns.values():
            if (
                conn.client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS
                or conn.client.socket() is None
            ):
                conn.connected = False
                if now - conn.last_attempt >= RECONNECT_EVERY_S:
                    conn.last_attempt = now
                    with contextlib.suppress(OSError):
                        conn.client.reconnect()
                self._track_socket(conn)

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until the broker confirmed every message (QoS 1) or the timeout passed."""
        deadline = time.monotonic() + timeout
        while self.unconfirmed > 0 and time.monotonic() < deadline:
            self.poll(0.02)
        return self.unconfirmed <= 0

    def close(self) -> None:
        """Disconnect every device cleanly (no last will is sent on a clean disconnect)."""
        for conn in self._conns.values():
            conn.client.disconnect()
            conn.client.loop_write()
        self._selector.close()
