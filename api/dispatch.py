"""Commands after they are stored: published, followed to their cmd_ack, or expired.

The route stores a command as ``queued`` and hands it here. ``publish`` sends
it on ``sc/{community}/{kind}/{id}/cmd`` at QoS 1; the broker's PUBACK marks it
``sent``. The device's ``cmd_ack`` (``sc/+/+/+/cmd_ack``, received on a
persistent session of the API's own, ``GW_API_CLIENT_ID``) marks it
``acknowledged`` or ``failed``; one without an ack by its ``expires_ts`` is
marked ``expired``. Every SQL update runs on one worker thread, so paho's
network threads never wait for the database, and an ack is confirmed to the
broker only after its update is committed: acks that arrive while the API is
down wait in its session.

An ack is believed only from the device the command went to (the topic's
device, community and kind must be the command's), and only if the device
sent it by the command's expiry (a late ack after ``expired`` still counts:
the device did it, the ack was slow).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import paho.mqtt.client as mqtt
from sqlalchemy import func, update

from alerts.sql import Database
from api.models import PENDING_COMMANDS, Command, CommandStatus
from broker.address import BrokerAddress
from broker.connection import make_client, persistent_session_properties
from devices import contract
from devices.contract import Channel, device_topic
from devices.kind import CMD_ACK_DECODER
from gridwatch.clock import Clock

log = logging.getLogger("gridwatch.api")

ACK_FILTER = "sc/+/+/+/cmd_ack"
SWEEP_EVERY_S = 0.5
SESSION_EXPIRY_S = 7 * 24 * 3600  # acks wait this long in the broker for a stopped API
ACK_INFLIGHT = 1000

StatusListener = Callable[[str, CommandStatus], None]


@dataclass(frozen=True, slots=True)
class _Sent:
    cmd_id: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class _Acked:
    topic: contract.Topic
    ack: contract.CmdAck
    mid: int
    qos: int


_Job = _Sent | _Acked


def command_payload(command: Command) -> bytes:
    """The contract's cmd message for a stored command."""
    message = contract.Command(
        cmd_id=command.id,
        ts=command.created_ms,
        name=command.name,
        args=command.args,
        expires_ts=command.expires_ms,
    )
    return msgspec.json.encode(message)


class Dispatcher:
    """Publishes commands and keeps their status in SQL (see the module's doc)."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        publisher: mqtt.Client,
        broker: BrokerAddress,
        client_id: str,
        on_status: StatusListener | None = None,
    ) -> None:
        self._database = database
        self._clock = clock
        self._publisher = publisher
        self._on_status = on_status or (lambda _cmd, _status: None)
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._mids: dict[int, str] = {}  # publisher mid → cmd_id, until its PUBACK
        self._early: set[int] = set()  # PUBACKs seen before publish() returned their mid
        self._publisher.on_publish = self._on_publish
        self._acks = make_client(broker, client_id, v5=True, manual_ack=True)
        self._acks.on_connect = self._subscribe
        self._acks.on_message = self._on_ack
        self._worker = threading.Thread(target=self._work, name="api-commands", daemon=True)
        self._broker = broker

    def start(self) -> None:
        """Connect the ack session and start the worker."""
        self._worker.start()
        self._acks.connect_async(
            self._broker.host,
            self._broker.port,
            keepalive=30,
            clean_start=False,
            properties=persistent_session_properties(SESSION_EXPIRY_S, ACK_INFLIGHT),
        )
        self._acks.loop_start()

    def close(self) -> None:
        """Stop the ack session and the worker (pending work is finished first)."""
        self._acks.disconnect()
        self._acks.loop_stop()
        self._stopping.set()
        self._worker.join(10)

    # --- publishing -----------------------------------------------------------------

    def publish(self, command: Command) -> None:
        """Send a stored command to its device; its PUBACK will mark it sent."""
        topic = device_topic(command.community_id, command.kind, command.device_id, Channel.CMD)
        info = self._publisher.publish(topic, command_payload(command), qos=1)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                acked = True
            else:
                self._mids[info.mid] = command.id
                acked = False
        if acked:
            self._jobs.put(_Sent(command.id, self._clock.now_ms()))

    def _on_publish(self, _client: mqtt.Client, _data: object, mid: int, *_: object) -> None:
        # Called on paho's thread, possibly before publish() has returned the mid.
        with self._lock:
            cmd_id = self._mids.pop(mid, None)
            if cmd_id is None:
                self._early.add(mid)
                return
        self._jobs.put(_Sent(cmd_id, self._clock.now_ms()))

    # --- acks -------------------------------------------------------------------------

    def _subscribe(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe(ACK_FILTER, qos=1)

    def _on_ack(self, client: mqtt.Client, _data: object, message: mqtt.MQTTMessage) -> None:
        try:
            topic = contract.parse_topic(message.topic)
            ack = CMD_ACK_DECODER.decode(message.payload)
        except (contract.TopicError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.info("commands: ignored a bad cmd_ack on %s: %s", message.topic, exc)
            client.ack(message.mid, message.qos)
            return
        self._jobs.put(_Acked(topic, ack, message.mid, message.qos))

    # --- the worker -------------------------------------------------------------------

    def _work(self) -> None:
        while not (self._stopping.is_set() and self._jobs.empty()):
            try:
                job: _Job | None = self._jobs.get(timeout=SWEEP_EVERY_S)
            except queue.Empty:
                job = None
            try:
                if isinstance(job, _Sent):
                    self._mark_sent(job)
                elif isinstance(job, _Acked):
                    self._apply_ack(job)
                    self._acks.ack(job.mid, job.qos)
                self.expire()
            except Exception:
                # The worker must outlive a database hiccup; the ack stays unconfirmed
                # and the broker sends it again after a reconnect.
                log.exception("commands: update failed")

    def _mark_sent(self, job: _Sent) -> None:
        with self._database.write() as session:
            done = session.execute(
                update(Command)
                .where(Command.id == job.cmd_id, Command.status == CommandStatus.QUEUED.value)
                .values(status=CommandStatus.SENT.value, sent_ms=job.at_ms)
            ).rowcount  # type: ignore[attr-defined]
        if done:
            self._on_status(job.cmd_id, CommandStatus.SENT)

    def _apply_ack(self, job: _Acked) -> None:
        ack, topic = job.ack, job.topic
        status = CommandStatus.ACKNOWLEDGED if ack.ok else CommandStatus.FAILED
        with self._database.write() as session:
            done = session.execute(
                update(Command)
                .where(
                    Command.id == ack.cmd_id,
                    Command.device_id == topic.device_id,
                    Command.community_id == topic.community,
                    Command.kind == topic.kind,
                    Command.status.in_([*PENDING_COMMANDS, CommandStatus.EXPIRED]),
                    Command.expires_ms >= ack.ts,
                )
                .values(
                    status=status.value,
                    # An acknowledged command was delivered, even if its PUBACK is still queued.
                    sent_ms=func.coalesce(Command.sent_ms, self._clock.now_ms()),
                    finished_ms=self._clock.now_ms(),
                    ack_ts=ack.ts,
                    error=ack.error,
                )
            ).rowcount  # type: ignore[attr-defined]
        if done:
            self._on_status(ack.cmd_id, status)
        else:
            log.info("commands: cmd_ack %s from %s matches no command", ack.cmd_id, topic)

    def expire(self) -> int:
        """Mark commands past their expiry without an ack as expired; returns how many."""
        now = self._clock.now_ms()
        with self._database.write() as session:
            expired = list(
                session.scalars(
                    update(Command)
                    .where(Command.status.in_(PENDING_COMMANDS), Command.expires_ms < now)
                    .values(status=CommandStatus.EXPIRED.value, finished_ms=now)
                    .returning(Command.id)
                )
            )
        for cmd_id in expired:
            self._on_status(cmd_id, CommandStatus.EXPIRED)
        return len(expired)
