"""Many device connections driven by one thread.

Each simulated device has its own MQTT connection, as a real one does, so it
has its own last will (``{"online": false}``, retained, on its status topic)
and its own ``cmd`` subscription. One selector reads every socket; writes are
buffered per connection and go out in bursts (``simulators.mqtt``), so a
replay costs far fewer system calls than messages.

A city (hundreds of thousands of devices) does not fit one broker's file
descriptors on one machine: ``devices_per_connection`` > 1 then puts several
devices on one connection, as vendors' gateways do. Such devices have no last
will of their own and cannot be dropped one by one.

With broker security on, a device with its own connection logs in as itself
(``credentials``: device id -> the password issued to it); a shared gateway
connection logs in with the broker address's account (the simulator's).
"""

from __future__ import annotations

import contextlib
import logging
import select
import selectors
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from broker.address import BrokerAddress
from devices.contract import Channel, device_topic
from simulators.mqtt import Connection, State, Tally, Will

log = logging.getLogger("gridwatch.simulate")

OFFLINE_WILL = b'{"online":false}'
RECONNECT_EVERY_S = 2.0
HOUSEKEEPING_EVERY_S = 1.0
# Write the buffers out after this many messages even while the simulation runs ahead.
FLUSH_EVERY = 16_384
KEEPALIVE_S = 60

CommandHandler = Callable[[str, bytes], None]


def _drop_command(device_id: str, payload: bytes) -> None:
    log.debug("%s: command received before a handler was set", device_id)


class Fleet:
    """MQTT connections for simulated devices; ``publish`` buffers, ``poll`` does the I/O."""

    def __init__(
        self,
        broker: BrokerAddress,
        qos: int = 1,
        *,
        devices_per_connection: int = 1,
        keepalive: int = KEEPALIVE_S,
        ca_file: str | None = None,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        if devices_per_connection < 1:
            raise ValueError("devices_per_connection must be at least 1")
        self.broker = broker
        self.qos = qos
        self.devices_per_connection = devices_per_connection
        self.keepalive = keepalive
        self.ca_file = ca_file
        self.credentials = credentials or {}
        self.on_command: CommandHandler = _drop_command
        self.tally = Tally()
        self._pending: list[tuple[str, str, str]] = []  # added, not yet connected
        self._conns: dict[str, Connection] = {}  # by device id
        self._connections: list[Connection] = []
        self._registered: dict[Connection, socket.socket] = {}  # in the selector
        self._cmd_topics: dict[str, str] = {}  # cmd topic -> device id
        self._held_down: set[Connection] = set()  # dropped on purpose: no reconnecting
        self._dirty: list[Connection] = []
        self._selector = selectors.DefaultSelector()
        self._published = 0
        self._since_flush = 0
        self._last_housekeeping = 0.0
        self._last_attempt: dict[Connection, float] = {}

    # --- connections --------------------------------------------------------------

    def add(self, device_id: str, community: str, kind: str) -> None:
        """Register a device; its connection opens in ``connect``/``wait_connected``."""
        self._pending.append((device_id, community, kind))
        self._cmd_topics[device_topic(community, kind, device_id, Channel.CMD)] = device_id

    def connect(self) -> None:
        """Open the connections of every device added since the last call."""
        pending, self._pending = self._pending, []
        size = self.devices_per_connection
        for i in range(0, len(pending), size):
            self._open_group(pending[i : i + size])

    def _open_group(self, group: list[tuple[str, str, str]]) -> None:
        cmd = tuple(device_topic(c, k, d, Channel.CMD) for d, c, k in group)
        address = self.broker
        if len(group) == 1:
            device_id, community, kind = group[0]
            status = device_topic(community, kind, device_id, Channel.STATUS)
            client_id, will = device_id, Will(status, OFFLINE_WILL, qos=1, retain=True)
            if device_id in self.credentials:
                address = replace(address, username=device_id, password=self.credentials[device_id])
        else:
            client_id, will = f"gw-{group[0][0]}"[:64], None
        conn = Connection(
            client_id,
            address,
            will=will,
            subscriptions=cmd,
            keepalive=self.keepalive,
            on_message=self._on_message,
            tally=self.tally,
            ca_file=self.ca_file,
        )
        for device_id, _, _ in group:
            self._conns[device_id] = conn
        self._connections.append(conn)
        self._open(conn)

    def _open(self, conn: Connection) -> None:
        self._unregister(conn)
        self._last_attempt[conn] = time.monotonic()
        try:
            conn.open()
        except OSError as exc:
            log.debug("%s cannot connect: %s", conn.client_id, exc)
            return
        sock = conn.sock
        if sock is None:  # lost while writing CONNECT
            return
        self._selector.register(sock, selectors.EVENT_READ, conn)
        self._registered[conn] = sock
        if not conn.dirty:
            self._mark_dirty(conn)

    def wait_connected(self, timeout: float = 30.0) -> None:
        """Open pending connections and poll until each has its CONNACK; raise if some never do."""
        self.connect()
        deadline = time.monotonic() + timeout
        connections = set(self._conns.values())
        while time.monotonic() < deadline:
            self.poll(0.05)
            refused = [c for c in connections if c.refused]
            if refused:
                raise ConnectionError(f"{refused[0].client_id} refused: {refused[0].refused}")
            if all(c.state is State.CONNECTED for c in connections):
                return
        missing = sorted(c.client_id for c in connections if c.state is not State.CONNECTED)
        raise ConnectionError(f"{len(missing)} devices could not connect, e.g. {missing[:3]}")

    def _on_message(self, topic: str, payload: bytes) -> None:
        device_id = self._cmd_topics.get(topic)
        if device_id is not None:
            self.on_command(device_id, payload)

    def drop(self, device_id: str) -> None:
        """Lose the device's connection without DISCONNECT: the broker publishes its will."""
        conn = self._conns[device_id]
        if conn.will is None:
            raise ValueError(f"{device_id} shares a connection: it has no last will of its own")
        self._settle(conn)
        self._unregister(conn)
        conn.drop()
        self._held_down.add(conn)

    @staticmethod
    def _settle(conn: Connection, timeout: float = 5.0) -> None:
        """Write out, and see acknowledged, what the device has sent so far.

        The buffering is ours, not the device's: what it sent before it went away
        must reach the broker before its will does.
        """
        deadline = time.monotonic() + timeout
        while conn.sock is not None and (conn.out or conn.inflight):
            if time.monotonic() > deadline:
                unconfirmed = len(conn.inflight)
                log.warning("%s: %d messages unconfirmed as it drops", conn.client_id, unconfirmed)
                return
            conn.flush()
            readable, _, _ = select.select([conn.sock], [], [], 0.01)
            if readable:
                conn.read()

    def restore(self, device_id: str) -> None:
        """Reconnect a dropped device."""
        conn = self._conns[device_id]
        self._held_down.discard(conn)
        if conn.state is State.CLOSED:
            self._open(conn)

    def _unregister(self, conn: Connection) -> None:
        sock = self._registered.pop(conn, None)
        if sock is not None:
            # A socket closed meanwhile has left epoll already; the selector forgets it too.
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sock)

    # --- traffic ------------------------------------------------------------------

    @property
    def unconfirmed(self) -> int:
        """Messages published but not yet acknowledged (QoS 1) or written (QoS 0)."""
        return self._published - self.tally.settled

    @property
    def lost(self) -> int:
        """QoS 0 messages lost with a connection (QoS 1 ones are sent again)."""
        return self.tally.lost

    def publish(self, device_id: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Queue a message on the device's connection; it goes out at the next flush."""
        conn = self._conns[device_id]
        if not conn.publish(topic, payload, self.qos, retain):
            return  # QoS 0 while offline is lost, as on a real device
        self._published += 1
        if not conn.dirty:
            self._mark_dirty(conn)
        self._since_flush += 1
        if self._since_flush >= FLUSH_EVERY:
            self._flush()

    def _mark_dirty(self, conn: Connection) -> None:
        conn.dirty = True
        self._dirty.append(conn)

    def _flush(self) -> None:
        self._since_flush = 0
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            if conn.flush() or conn.sock is None:
                conn.dirty = False
                if conn.sock is None:
                    self._unregister(conn)
            else:
                self._dirty.append(conn)  # the socket is full; try again at the next poll

    def poll(self, timeout: float) -> None:
        """Write what is buffered, read what arrived (acks, commands), keep alive, reconnect."""
        self._flush()
        for key, _ in self._selector.select(0 if self._dirty else timeout):
            conn: Connection = key.data
            conn.read()
            if conn.sock is None:
                self._unregister(conn)
            elif conn.out and not conn.dirty:
                self._mark_dirty(conn)
        if self._dirty and timeout > 0:
            time.sleep(min(timeout, 0.001))  # sockets full: give the broker a moment
        now = time.monotonic()
        if now - self._last_housekeeping >= HOUSEKEEPING_EVERY_S:
            self._last_housekeeping = now
            self._housekeeping(now)

    def _housekeeping(self, now: float) -> None:
        for conn in self._connections:
            if conn.state is State.CLOSED:
                if self._may_reconnect(conn, now):
                    self._open(conn)
                continue
            conn.ping_if_idle(now)
            if conn.out and not conn.dirty:
                self._mark_dirty(conn)

    def _may_reconnect(self, conn: Connection, now: float) -> bool:
        """Not dropped on purpose, not refused, and not tried too recently."""
        recent = now - self._last_attempt.get(conn, 0.0) < RECONNECT_EVERY_S
        return conn not in self._held_down and not conn.refused and not recent

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until the broker confirmed every message (QoS 1) or the timeout passed."""
        deadline = time.monotonic() + timeout
        while self.unconfirmed > 0 and time.monotonic() < deadline:
            self.poll(0.02)
        return self.unconfirmed <= 0

    def close(self) -> None:
        """Disconnect every device cleanly (no last will is sent on a clean disconnect)."""
        for conn in self._connections:
            self._unregister(conn)
            conn.disconnect()
        self._selector.close()
