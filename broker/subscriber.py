"""A lean MQTT 5 subscriber for ingest: persistent session, manual and batched PUBACKs.

Why not paho here: measured on this machine, paho's Python per-message path
caps a subscriber that only counts at about 15,000 msg/s at QoS 1
(../shared/peers/RESULTS.md), below ingest's goal with validation and writing
on top. This client reads the socket in large chunks, parses PUBLISH packets
in one tight loop, and sends the PUBACKs of a whole InfluxDB batch in one
write; a raw prototype of it received 30,000 msg/s from the same broker.

It does only what ingest needs: CONNECT with ``clean_start=0``, a session
expiry, Receive Maximum (the broker never has more than that many
unacknowledged messages out to us: our memory bound) and Maximum Packet Size;
SUBSCRIBE at QoS 1 with retain handling 1; PUBLISH in (QoS 0 and 1);
PUBACK out; PINGREQ keep-alive; reconnect with backoff. Acks carry the
connection generation they belong to: after a reconnect the broker redelivers
what was not acknowledged, and a packet id from the old connection must never
acknowledge a different message on the new one.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from broker.address import BrokerAddress

log = logging.getLogger("gridwatch.broker")

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14
# CONNECT properties
SESSION_EXPIRY, RECEIVE_MAXIMUM, MAXIMUM_PACKET_SIZE = 0x11, 0x21, 0x27
READ_CHUNK = 1 << 18
MAX_BACKOFF_S = 30.0


class ProtocolError(Exception):
    """The broker sent something this client does not accept."""


class ConnectionRefused(ProtocolError):
    """CONNACK with a failure reason (e.g. 0x86 bad user name or password)."""

    def __init__(self, reason: int) -> None:
        super().__init__(f"broker refused the connection: reason 0x{reason:02x}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Delivery:
    """One PUBLISH received; ``generation`` is the connection it came on."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int
    retain: bool
    generation: int


def encode_varint(n: int) -> bytes:
    """MQTT variable byte integer."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def decode_varint(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, next position), or None if ``buf`` ends inside the integer."""
    value, shift = 0, 0
    for i in range(pos, min(pos + 4, len(buf))):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    if len(buf) - pos >= 4:
        raise ProtocolError("variable byte integer longer than 4 bytes")
    return None


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + encode_varint(len(body)) + body


def connect_packet(
    client_id: str,
    *,
    keepalive_s: int,
    session_expiry_s: int,
    receive_maximum: int,
    maximum_packet_size: int,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT, MQTT 5, clean_start=0 (the session survives restarts)."""
    flags = (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    props = (
        bytes([SESSION_EXPIRY])
        + struct.pack("!I", session_expiry_s)
        + bytes([RECEIVE_MAXIMUM])
        + struct.pack("!H", receive_maximum)
        + bytes([MAXIMUM_PACKET_SIZE])
        + struct.pack("!I", maximum_packet_size)
    )
    body = _utf8("MQTT") + b"\x05" + bytes([flags]) + struct.pack("!H", keepalive_s)
    body += encode_varint(len(props)) + props + _utf8(client_id)
    if username is not None:
        body += _utf8(username)
    if password is not None:
        body += _utf8(password)
    return _packet(CONNECT, 0, body)


def subscribe_packet(packet_id: int, topic_filter: str) -> bytes:
    """SUBSCRIBE at QoS 1, retain handling 1: retained messages only for a new subscription."""
    options = 0x01 | (1 << 4)
    body = struct.pack("!H", packet_id) + b"\x00" + _utf8(topic_filter) + bytes([options])
    return _packet(SUBSCRIBE, 0x2, body)


def unsubscribe_packet(packet_id: int, topic_filter: str) -> bytes:
    """UNSUBSCRIBE from one topic filter (no properties)."""
    body = struct.pack("!H", packet_id) + b"\x00" + _utf8(topic_filter)
    return _packet(UNSUBSCRIBE, 0x2, body)


def shared(topic_filter: str, group: str) -> str:
    """``$share/{group}/{filter}`` (replicas in a group split the messages); no group: as is."""
    return f"$share/{group}/{topic_filter}" if group else topic_filter


def unshared(topic_filter: str) -> str | None:
    """The plain filter behind ``$share/{group}/{filter}``; None for a plain filter."""
    if not topic_filter.startswith("$share/"):
        return None
    return topic_filter.split("/", 2)[2]


def puback_packets(packet_ids: Iterable[int]) -> bytes:
    """PUBACKs (success, no reason code or properties: the short MQTT 5 form)."""
    return b"".join(b"\x40\x02" + struct.pack("!H", pid) for pid in packet_ids)


class Settable(Protocol):
    """A gauge (prometheus_client's, or anything with ``set``)."""

    def set(self, value: float) -> None: ...


def track_connection(subscriber: Subscriber, up: Settable, logger: logging.Logger) -> None:
    """Keep ``up`` at 1 while ``subscriber`` is connected, and log each change."""

    def connected(session_present: bool) -> None:
        up.set(1)
        logger.info("connected to broker (session present: %s)", session_present)

    def disconnected(why: str) -> None:
        up.set(0)
        logger.warning("disconnected from broker (%s); reconnecting", why)

    subscriber.on_connected = connected
    subscriber.on_disconnected = disconnected


class Ackable(Protocol):
    """Whatever identifies a received message for its PUBACK (a Delivery, or a slimmer record)."""

    @property
    def qos(self) -> int: ...
    @property
    def packet_id(self) -> int: ...
    @property
    def generation(self) -> int: ...


class Subscriber:
    """One persistent MQTT 5 session on one topic filter, read by its own thread."""

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        topic_filter: str,
        on_message: Callable[[Delivery], None],
        *,
        receive_maximum: int,
        session_expiry_s: int = 7 * 86_400,
        keepalive_s: int = 30,
        maximum_packet_size: int = 4 * 1024 * 1024,
        ca_file: str | None = None,
    ) -> None:
        self.address = address
        self.client_id = client_id
        self.topic_filter = topic_filter
        self.on_message = on_message
        self.on_connected: Callable[[bool], None] = lambda session_present: None
        self.on_disconnected: Callable[[str], None] = lambda why: None
        self.subscribed = threading.Event()
        self._receive_maximum = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        self._maximum_packet_size = maximum_packet_size
        self._ca_file = ca_file
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._last_sent = 0.0
        self._generation = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-subscriber", daemon=True)

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Connect and read in the background, reconnecting until ``stop``."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect cleanly (the session, and what it holds, stays with the broker)."""
        self._stop.set()
        with self._send_lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):  # already gone: nothing to say goodbye to
                    self._sock.sendall(_packet(DISCONNECT, 0, b""))
                    self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout)

    # --- acknowledgements (any thread) -----------------------------------------------

    def ack(self, deliveries: Iterable[Ackable]) -> None:
        """Acknowledge, in the given order, the QoS 1 deliveries of the current connection.

        Deliveries from an earlier connection are skipped: the broker has
        already redelivered them on this one, where they will be acknowledged.
        """
        generation = self._generation
        ids = [d.packet_id for d in deliveries if d.qos == 1 and d.generation == generation]
        if ids:
            self._send(puback_packets(ids), generation)

    def _send(self, data: bytes, generation: int | None = None) -> None:
        with self._send_lock:
            sock = self._sock
            if sock is None or (generation is not None and generation != self._generation):
                return
            try:
                sock.sendall(data)
                self._last_sent = time.monotonic()
            except OSError as exc:
                log.debug("send failed (%s); the reader will reconnect", exc)

    # --- the reader thread -------------------------------------------------------------

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self._session()
                backoff = 1.0
            except (OSError, ProtocolError) as exc:
                if self._stop.is_set():
                    break
                self.on_disconnected(str(exc) or type(exc).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            finally:
                self.subscribed.clear()
                self._close()

    def _close(self) -> None:
        with self._send_lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _open_socket(self) -> socket.socket:
        sock = socket.create_connection((self.address.host, self.address.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if self.address.tls:
            context = ssl.create_default_context(cafile=self._ca_file or self.address.ca_file)
            sock = context.wrap_socket(sock, server_hostname=self.address.host)
        return sock

    def _session(self) -> None:
        sock = self._open_socket()
        with self._send_lock:
            self._sock = sock
            self._generation += 1
        self._send(
            connect_packet(
                self.client_id,
                keepalive_s=self._keepalive_s,
                session_expiry_s=self._session_expiry_s,
                receive_maximum=self._receive_maximum,
                maximum_packet_size=self._maximum_packet_size,
                username=self.address.username,
                password=self.address.password,
            )
        )
        self._read_loop(sock)

    def _read_loop(self, sock: socket.socket) -> None:
        buf = bytearray()
        generation = self._generation
        sock.settimeout(None)
        while not self._stop.is_set():
            # A socket with data buffered by TLS is readable even if select says not.
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
            if not pending and not select.select([sock], [], [], 1.0)[0]:
                self._keep_alive()
                continue
            data = sock.recv(READ_CHUNK)
            if not data:
                raise ConnectionResetError("the broker closed the connection")
            buf += data
            consumed = self._parse(buf, generation)
            del buf[:consumed]
            self._keep_alive()

    def _keep_alive(self) -> None:
        if time.monotonic() - self._last_sent >= self._keepalive_s / 2:
            self._send(_packet(PINGREQ, 0, b""))

    def _parse(self, buf: bytearray, generation: int) -> int:
        """Handle every complete packet in ``buf``; return how many bytes were used."""
        pos, end = 0, len(buf)
        while end - pos >= 2:
            header = buf[pos]
            length = decode_varint(buf, pos + 1)
            if length is None:
                break
            size, start = length
            if start + size > end:
                break
            kind = header >> 4
            if kind == PUBLISH:
                self._publish(buf, header, start, start + size, generation)
            else:
                self._control(kind, bytes(buf[start : start + size]))
            pos = start + size
        return pos

    def _publish(self, buf: bytearray, header: int, start: int, stop: int, generation: int) -> None:
        qos = (header >> 1) & 0x3
        topic_len = (buf[start] << 8) | buf[start + 1]
        i = start + 2 + topic_len
        topic = buf[start + 2 : i].decode("utf-8", "replace")
        packet_id = 0
        if qos:
            packet_id = (buf[i] << 8) | buf[i + 1]
            i += 2
        props = decode_varint(buf, i)
        if props is None:
            raise ProtocolError("truncated PUBLISH properties")
        props_len, i = props
        delivery = Delivery(
            topic, bytes(buf[i + props_len : stop]), qos, packet_id, bool(header & 1), generation
        )
        self.on_message(delivery)

    def _control(self, kind: int, body: bytes) -> None:
        if kind == CONNACK:
            session_present, reason = bool(body[0] & 1), body[1]
            if reason >= 0x80:
                raise ConnectionRefused(reason)
            self.on_connected(session_present)
            plain = unshared(self.topic_filter)
            if session_present and plain is not None:
                # A session that subscribed before it joined a share group keeps its
                # plain subscription: every message would arrive twice, and the group
                # would not split the load.
                self._send(unsubscribe_packet(2, plain))
            self._send(subscribe_packet(1, self.topic_filter))
        elif kind == SUBACK:
            codes = body[3 + body[2] :] if len(body) > 2 else b""
            if any(code >= 0x80 for code in codes):
                raise ProtocolError(f"subscription refused: reason 0x{codes[0]:02x}")
            self.subscribed.set()
        elif kind == DISCONNECT:
            reason = body[0] if body else 0
            raise ConnectionResetError(f"broker sent DISCONNECT, reason 0x{reason:02x}")
        elif kind not in (PINGRESP, UNSUBACK):
            log.debug("ignoring MQTT packet type %d", kind)
