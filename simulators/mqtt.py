"""A small MQTT 3.1.1 client for simulated devices: many connections, one thread, batched writes.

Why not paho: replaying a day of a community flat out, paho spends most of the
time per message on one ``send()`` per PUBLISH and on Python bookkeeping per
PUBACK. A simulated device needs few packets: CONNECT with its last will,
SUBSCRIBE to its ``cmd`` topic, PUBLISH at QoS 0 or 1, PUBACK for the commands
it receives, PINGREQ, DISCONNECT. This module encodes those, buffers a
connection's outgoing packets so that one ``send()`` carries many, and counts
the broker's PUBACKs in bulk (Mosquitto acknowledges a connection's QoS 1
messages in the order it received them).

Not supported, because no simulated device needs it: QoS 2, MQTT 5, receiving
at QoS 2, a broker that acknowledges out of order (refused as a protocol error).
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from broker.address import BrokerAddress

log = logging.getLogger("gridwatch.simulate")

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14
MAX_REMAINING_LENGTH = 268_435_455  # the largest a 4-byte variable length can say
PINGREQ_PACKET = bytes((PINGREQ << 4, 0))
DISCONNECT_PACKET = bytes((DISCONNECT << 4, 0))
_PUBACK_HEAD = bytes((PUBACK << 4, 2))
_DUP = 0x08
READ_SIZE = 262_144
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class ProtocolError(ConnectionError):
    """The broker sent something an MQTT 3.1.1 client cannot accept."""


# --- encoding ---------------------------------------------------------------------


def encode_length(n: int) -> bytes:
    """MQTT's variable-length integer (1 to 4 bytes)."""
    if n < 128:
        return bytes((n,))
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        digit, n = n & 0x7F, n >> 7
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def utf8_field(text: str) -> bytes:
    """A length-prefixed UTF-8 string, as topics and ids are written."""
    raw = text.encode()
    if len(raw) > 65_535:
        raise ValueError("MQTT strings are at most 65,535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def _binary_field(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes for a client whose connection is lost."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def connect_packet(
    client_id: str,
    *,
    keepalive: int,
    clean_session: bool,
    will: Will | None = None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT, protocol level 4 (3.1.1)."""
    flags = 0x02 if clean_session else 0
    payload = utf8_field(client_id)
    if will is not None:
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
        payload += utf8_field(will.topic) + _binary_field(will.payload)
    if username is not None:
        flags |= 0x80
        payload += utf8_field(username)
        if password is not None:
            flags |= 0x40
            payload += _binary_field(password.encode())
    variable = utf8_field("MQTT") + bytes((4, flags)) + keepalive.to_bytes(2, "big")
    body = variable + payload
    return bytes((CONNECT << 4,)) + encode_length(len(body)) + body


def subscribe_packet(packet_id: int, topic: str, qos: int) -> bytes:
    """SUBSCRIBE to one topic filter."""
    body = packet_id.to_bytes(2, "big") + utf8_field(topic) + bytes((qos,))
    return bytes((SUBSCRIBE << 4 | 0x02,)) + encode_length(len(body)) + body


def publish_packet(
    topic_field: bytes, payload: bytes, *, qos: int, retain: bool, packet_id: int = 0
) -> bytes:
    """PUBLISH; ``topic_field`` is the topic as ``utf8_field`` wrote it (callers cache it)."""
    head = PUBLISH << 4 | qos << 1 | retain
    if qos:
        variable = topic_field + packet_id.to_bytes(2, "big")
        return bytes((head,)) + encode_length(len(variable) + len(payload)) + variable + payload
    return bytes((head,)) + encode_length(len(topic_field) + len(payload)) + topic_field + payload


def puback_packet(packet_id: int) -> bytes:
    """PUBACK for a QoS 1 message received."""
    return _PUBACK_HEAD + packet_id.to_bytes(2, "big")


def with_dup_flag(packet: bytes) -> bytes:
    """The same PUBLISH marked as a redelivery."""
    return bytes((packet[0] | _DUP,)) + packet[1:]


# --- decoding ---------------------------------------------------------------------


class Packet(NamedTuple):
    """One control packet received: its type, the low nibble of its first byte, its body."""

    type: int
    flags: int
    body: bytes


class PacketReader:
    """Splits a byte stream into packets; a packet may arrive over several reads."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        """Add bytes; return the packets now complete."""
        self._buf += data
        packets: list[Packet] = []
        buf, pos, end = self._buf, 0, len(self._buf)
        while end - pos >= 2:
            length, shift, i = 0, 0, pos + 1
            while True:
                if i >= end:
                    del buf[:pos]
                    return packets
                digit = buf[i]
                length |= (digit & 0x7F) << shift
                i += 1
                if not digit & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("malformed remaining length")
            if i + length > end:
                break
            packets.append(Packet(buf[pos] >> 4, buf[pos] & 0x0F, bytes(buf[i : i + length])))
            pos = i + length
        del buf[:pos]
        return packets

    @property
    def empty(self) -> bool:
        """No partial packet is waiting for more bytes."""
        return not self._buf


def parse_publish(packet: Packet) -> tuple[str, int, bytes]:
    """Topic, packet id (0 at QoS 0) and payload of a received PUBLISH."""
    body = packet.body
    topic_len = int.from_bytes(body[:2], "big")
    topic = body[2 : 2 + topic_len].decode()
    pos = 2 + topic_len
    packet_id = 0
    if (packet.flags >> 1) & 0x03:
        packet_id = int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
    return topic, packet_id, body[pos:]


# --- one connection ---------------------------------------------------------------


class State(Enum):
    """Where a connection is in its life."""

    CLOSED = "closed"
    CONNECTING = "connecting"  # CONNECT sent, waiting for CONNACK
    CONNECTED = "connected"


MessageHandler = Callable[[str, bytes], None]


@dataclass(slots=True)
class Tally:
    """Counts shared by a fleet's connections: messages no longer waiting, and those lost."""

    settled: int = 0  # acknowledged (QoS 1), handed to the kernel (QoS 0), or lost
    lost: int = 0  # QoS 0 messages that a lost connection took with it


class Connection:
    """One MQTT session: its socket, its outgoing buffer, its unacknowledged QoS 1 packets.

    ``publish`` only appends to the buffer; ``flush`` writes it with as few
    ``send()`` calls as the socket allows. QoS 1 packets stay in ``inflight``
    until the broker acknowledges them, and are sent again (marked DUP) after a
    reconnect, since the session is persistent.
    """

    def __init__(
        self,
        client_id: str,
        address: BrokerAddress,
        *,
        will: Will | None = None,
        subscriptions: tuple[str, ...] = (),
        keepalive: int = 60,
        on_message: MessageHandler,
        tally: Tally | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.address = address
        self.will = will
        self.subscriptions = subscriptions
        self.keepalive = keepalive
        self.on_message = on_message
        self.tally = tally or Tally()
        self.ca_file = ca_file
        self.state = State.CLOSED
        self.sock: socket.socket | None = None
        self.out = bytearray()
        self.inflight: deque[tuple[int, bytes]] = deque()
        self.pending_qos0 = 0  # QoS 0 messages in ``out``, counted as unconfirmed until written
        self.sent_before_loss = 0  # the first this many of ``inflight`` went out on a lost socket
        self.refused: str | None = None
        self.last_write = 0.0
        self.dirty = False  # queued in its fleet's list of connections with bytes to write
        self._reader = PacketReader()
        self._next_id = 0
        self._topics: dict[str, bytes] = {}

    # --- opening and closing ---------------------------------------------------

    def open(self, timeout: float = 10.0) -> None:
        """Connect the socket and send CONNECT (the CONNACK arrives through ``read``)."""
        a = self.address
        sock = socket.create_connection((a.host, a.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if a.tls:
            context = ssl.create_default_context(cafile=self.ca_file or a.ca_file)
            sock = context.wrap_socket(sock, server_hostname=a.host)
        sock.setblocking(False)
        self.sock = sock
        self._reader = PacketReader()
        self.refused = None
        self.state = State.CONNECTING
        # Anything buffered for the lost socket is resent from ``inflight`` after CONNACK.
        self.out = bytearray(
            connect_packet(
                self.client_id,
                keepalive=self.keepalive,
                clean_session=False,  # commands sent while the device was away wait for it
                will=self.will,
                username=a.username,
                password=a.password,
            )
        )
        self.flush()

    def drop(self) -> None:
        """Close without DISCONNECT, as a device losing power does: the broker sends the will."""
        if self.sock is not None:
            # RST rather than FIN: the broker learns at once, as when a mobile link dies.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        self._close_socket()

    def _close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        if self.state is State.CONNECTED:  # every packet in inflight may have gone out
            self.sent_before_loss = len(self.inflight)
        self.state = State.CLOSED
        self.out.clear()
        self.tally.settled += self.pending_qos0
        self.tally.lost += self.pending_qos0
        self.pending_qos0 = 0

    def disconnect(self, timeout: float = 5.0) -> None:
        """Write what is buffered and DISCONNECT (the broker discards the will), then close."""
        if self.sock is not None and self.state is State.CONNECTED:
            # Blocking for this last write: a DISCONNECT cut short would fire the will.
            self.sock.settimeout(timeout)
            try:
                self.sock.sendall(bytes(self.out) + DISCONNECT_PACKET)
            except OSError as exc:
                log.debug("%s: DISCONNECT failed: %s", self.client_id, exc)
            self.out.clear()
            self.tally.settled += self.pending_qos0
            self.pending_qos0 = 0
        self._close_socket()

    # --- sending -----------------------------------------------------------------

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65_535 + 1
        return self._next_id

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        """Queue a message; False when it is lost at once (QoS 0 with no connection)."""
        field = self._topics.get(topic)
        if field is None:
            field = self._topics[topic] = utf8_field(topic)
        if qos == 0:
            if self.state is State.CLOSED:
                return False
            self.out += publish_packet(field, payload, qos=0, retain=retain)
            self.pending_qos0 += 1
            return True
        if len(self.inflight) >= 65_535:
            raise ProtocolError(f"{self.client_id}: 65,535 messages unacknowledged")
        packet_id = self._packet_id()
        packet = publish_packet(field, payload, qos=qos, retain=retain, packet_id=packet_id)
        self.inflight.append((packet_id, packet))
        if self.state is State.CONNECTED:
            self.out += packet
        return True

    def flush(self) -> bool:
        """Write what the socket takes; True when the buffer is empty."""
        if self.sock is None or not self.out:
            return not self.out
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return False
        except OSError as exc:
            self._lost(f"send failed: {exc}")
            return True
        self.last_write = time.monotonic()
        if sent < len(self.out):
            del self.out[:sent]
            return False
        self.out.clear()
        # QoS 0 messages are settled once the kernel has them: nothing else will confirm them.
        self.tally.settled += self.pending_qos0
        self.pending_qos0 = 0
        return True

    def ping_if_idle(self, now: float) -> None:
        """Send PINGREQ when nothing went out for half the keepalive."""
        if self.state is State.CONNECTED and now - self.last_write >= self.keepalive / 2:
            self.out += PINGREQ_PACKET

    # --- receiving ---------------------------------------------------------------

    def read(self) -> None:
        """Read and handle what arrived (acknowledgements, CONNACK, commands)."""
        while self.sock is not None:
            try:
                data = self.sock.recv(READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError as exc:
                self._lost(f"receive failed: {exc}")
                return
            if not data:
                self._lost("closed by the broker")
                return
            self._take(data)
            if len(data) < READ_SIZE and not isinstance(self.sock, ssl.SSLSocket):
                return  # a short read emptied the kernel buffer; TLS may hold more

    def _take(self, data: bytes) -> None:
        n = len(data) // 4
        # The common case while publishing: nothing but PUBACKs, four bytes each.
        if (
            self._reader.empty
            and len(data) % 4 == 0
            and data[0::4] == b"\x40" * n
            and data[1::4] == b"\x02" * n
        ):
            self._acknowledge(n, int.from_bytes(data[-2:], "big"))
            return
        for packet in self._reader.feed(data):
            self._handle(packet)

    def _acknowledge(self, n: int, last_id: int) -> None:
        if n > len(self.inflight):
            raise ProtocolError(f"{self.client_id}: PUBACK for a message never sent")
        for _ in range(n - 1):
            self.inflight.popleft()
        packet_id, _ = self.inflight.popleft()
        if packet_id != last_id:
            raise ProtocolError(
                f"{self.client_id}: PUBACK {last_id} out of order (expected {packet_id})"
            )
        self.tally.settled += n

    def _handle(self, packet: Packet) -> None:
        if packet.type == PUBACK:
            self._acknowledge(1, int.from_bytes(packet.body[:2], "big"))
        elif packet.type == PUBLISH:
            topic, packet_id, payload = parse_publish(packet)
            if packet_id:
                self.out += puback_packet(packet_id)
            self.on_message(topic, payload)
        elif packet.type == CONNACK:
            self._connected(packet.body)
        elif packet.type not in (SUBACK, PINGRESP):
            raise ProtocolError(f"{self.client_id}: unexpected packet type {packet.type}")

    def _connected(self, body: bytes) -> None:
        code = body[1] if len(body) >= 2 else 255
        if code != 0:
            self.refused = CONNACK_REASONS.get(code, f"refused ({code})")
            log.error("%s refused by broker: %s", self.client_id, self.refused)
            self._lost(self.refused)
            return
        self.state = State.CONNECTED
        for topic in self.subscriptions:
            self.out += subscribe_packet(self._packet_id(), topic, 1)
        # The session is persistent: what a lost socket carried is sent again, marked DUP;
        # what was published while disconnected goes out for the first time.
        for i, (_, packet) in enumerate(self.inflight):
            self.out += with_dup_flag(packet) if i < self.sent_before_loss else packet
        self.sent_before_loss = 0

    def _lost(self, why: str) -> None:
        log.debug("%s: connection lost: %s", self.client_id, why)
        self._close_socket()
