"""The alerts service: MQTT in (its own persistent session), alerts and notifications out.

Threads:

- paho's network thread queues each message with its MQTT id and arrival time;
- the processor takes the queue in batches and runs them through the
  ``AlertProcessor``: the rules, then in one SQL transaction the alerts,
  transitions, owed notifications and rule states. Only after the commit does
  it acknowledge the batch's messages, so a crash replays them instead of
  losing what they changed. It moves event time (the engine's timers) to a
  watermark: the newest ``ts`` seen ``straggle_ms`` of wall time ago, so that
  messages of other connections still on their way are in before anyone is
  judged silent (an accelerated replay over 342 connections reorders by minutes
  of event time); and, once the stream has caught up, with the wall clock (see
  ``_event_time``): a restart that replays a backlog must not first find every
  device silent;
- the dispatcher sends the outbox (``alerts.outbox``);
- the exporter writes transitions to InfluxDB (``alerts.export``).

Metrics (``alerts.metrics``): ``broker_up`` follows paho's connection callbacks;
``sql_up`` follows the processor's own transactions (one a second even when no
message comes), so it needs no query of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from alerts.channels import standard_channels
from alerts.directory import escalation_overrides, load_directory
from alerts.engine import Engine, default_rules
from alerts.export import TransitionExporter
from alerts.metrics import AlertsMetrics
from alerts.models import ESCALATED, Alert
from alerts.outbox import Dispatcher, RetryPolicy
from alerts.routing import Router
from alerts.rule import Finding
from alerts.sql import Database
from alerts.store import AlertStore, load_states, save_states
from broker.address import BrokerAddress
from broker.connection import make_client, persistent_session_properties
from gridwatch.clock import Clock, WallClock
from imagery.events import CAMERA_SUBSCRIPTION
from imagery.links import SnapshotLinks
from influx.client import InfluxClient, InfluxError
from ingest.decode import Limits, Reason, Rejected

log = logging.getLogger("gridwatch.alerts")

SUBSCRIPTION = "sc/+/+/+/#"
SESSION_EXPIRY_S = 7 * 86_400
TICK_S = 1.0  # how often time moves on (timers, escalations) when no message comes
STATUS_EVERY_S = 60.0
UNKNOWN_DEVICE_RELOAD_S = 5.0


@dataclass(frozen=True, slots=True)
class Processed:
    """What one ``AlertProcessor.process`` committed."""

    unknown: int  # messages naming an unknown device (the registry may be behind)
    outcomes: Counter[str]  # messages by outcome (accepted, rejected, ignored, camera)
    findings: list[Finding]
    transitions: Counter[str]  # opened, resolved, escalated

    @classmethod
    def nothing(cls, **outcomes: int) -> Processed:
        """Nothing committed (``outcomes``: messages counted anyway, e.g. ``poison=1``)."""
        return cls(0, Counter(outcomes), [], Counter())

    def __add__(self, other: Processed) -> Processed:
        return Processed(
            self.unknown + other.unknown,
            self.outcomes + other.outcomes,
            self.findings + other.findings,
            self.transitions + other.transitions,
        )


class AlertProcessor:
    """Messages (or the passing of time) → findings → alerts, notifications and states in SQL."""

    def __init__(
        self,
        database: Database,
        *,
        base_url: str,
        wall: Clock,
        escalate_after_ms: int,
        limits: Limits | None = None,
        links: SnapshotLinks | None = None,
    ) -> None:
        self._database = database
        rules = default_rules()
        self.router = Router()
        self.store = AlertStore(
            rules,
            self.router,
            base_url=base_url,
            wall=wall,
            escalate_after_ms=escalate_after_ms,
            links=links,
        )
        with database.read() as session:
            directory = load_directory(session)
            states = load_states(session)
        self.engine = Engine(rules, directory, limits=limits)
        self.store.set_escalation(escalation_overrides(directory))
        restored = self.engine.restore(states)
        self.restored = restored
        log.info(
            "alerts: %d devices in %d communities, %d rule states restored",
            len(directory.devices), len(directory.sites), restored,
        )  # fmt: skip

    def reload_registry(self) -> None:
        """Use the registry as it is now (devices, communities, settings, staff)."""
        with self._database.read() as session:
            directory = load_directory(session)
        self.engine.use_directory(directory)
        self.router.invalidate()
        self.store.set_escalation(escalation_overrides(directory))

    def process(
        self,
        messages: Iterable[tuple[str, bytes, int]],
        now_ms: int | None = None,
        *,
        move_time: bool = True,
    ) -> Processed:
        """Run messages (topic, payload, arrival ms), then move event time; commit.

        ``now_ms`` is the watermark to move to (default: the newest ``ts`` seen, right
        for one ordered stream); ``move_time=False`` leaves event time where it is.
        Returns what was committed.
        """
        # The engine's tally runs on from its start; the difference is this batch's.
        before = self.engine.outcomes.copy()
        unknown = 0
        for topic, payload, received_ms in messages:
            outcome = self.engine.handle(topic, payload, received_ms)
            if isinstance(outcome, Rejected) and outcome.reason is Reason.UNKNOWN_DEVICE:
                unknown += 1
        if move_time:
            self.engine.advance(now_ms)
        findings = self.engine.take_findings()
        changes = self.engine.take_changes()
        with self._database.write() as session:
            transitions = self.store.apply(session, findings)
            save_states(session, changes)
            transitions[ESCALATED] += self.store.escalate(session, self.engine.now_ms)
        return Processed(unknown, self.engine.outcomes - before, findings, transitions)


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """How the alerts service connects, batches, decides it is live, and sends."""

    broker: BrokerAddress
    client_id: str = "gridwatch-alerts"
    base_url: str = "http://127.0.0.1:18000"
    escalate_after_ms: int = 15 * 60_000
    batch_size: int = 2000
    flush_ms: int = 50
    inflight: int = 2000
    registry_refresh_s: float = 30.0
    # Messages of other connections may arrive this much (wall time) after the newest:
    # a replay at 3000x over 342 connections on a loaded machine stalls some of them
    # for seconds (hours of event time). Live, the wall clock moves time instead.
    straggle_ms: int = 30_000
    # Event time follows the wall once the watermark is this close to it, or once
    # nothing has arrived for idle_ms (the backlog is drained) ...
    live_lag_ms: int = 60_000
    idle_ms: int = 10_000
    # ... and then stays this far behind it, for messages still on their way.
    grace_ms: int = 5_000
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    send_timeout_s: float = 10.0
    send_workers: int = 4
    limits: Limits = field(default_factory=Limits)
    links: SnapshotLinks | None = None  # signs the snapshot links: GW_SNAPSHOT_LINK_KEY


class Watermark:
    """The newest ``ts`` seen ``lag_s`` seconds (wall) ago: what every connection has delivered."""

    def __init__(self, lag_s: float) -> None:
        self._lag_s = lag_s
        self._marks: deque[tuple[float, int]] = deque()  # (monotonic s, newest ts then)

    def note(self, now_s: float, newest_ms: int) -> int:
        """Record the newest ``ts`` now; return the watermark (0 until ``lag_s`` has passed)."""
        self._marks.append((now_s, newest_ms))
        settled = now_s - self._lag_s
        while len(self._marks) > 1 and self._marks[1][0] <= settled:
            self._marks.popleft()
        first_s, first_ms = self._marks[0]
        return first_ms if first_s <= settled else 0


@dataclass(slots=True)
class _Received:
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_ms: int

    @property
    def message(self) -> tuple[str, bytes, int]:
        """What ``AlertProcessor.process`` takes."""
        return self.topic, self.payload, self.received_ms

    def describe(self) -> str:
        """Topic and the start of the payload, for a log line."""
        return f"{self.topic[:200]} {self.payload[:200]!r}"


class AlertService:
    """The running service: ``start()``, then ``stop()``."""

    def __init__(
        self,
        config: AlertsConfig,
        database: Database,
        influx: InfluxClient | None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or WallClock()
        self._database = database
        self.metrics = AlertsMetrics()
        self.processor = self._new_processor()
        # The registry and rule states were just read: SQL answers (or we raised).
        self.metrics.sql_up.set(1)
        # A failed batch left the processor ahead of SQL; until a fresh one is read
        # from SQL no batch is processed (they come back after the reconnect).
        self._must_recover = False
        self._client = make_client(config.broker, config.client_id, v5=True, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self.subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: self.subscribed.set()
        self._http = httpx.Client(timeout=config.send_timeout_s)
        channels = standard_channels(self._http, self.clock, self._publish)
        self.dispatcher = Dispatcher(
            database,
            channels,
            self.clock,
            policy=config.policy,
            workers=config.send_workers,
            metrics=self.metrics,
        )
        self._queue: deque[_Received] = deque()
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._last_activity = time.monotonic()  # a message came, or a batch was acknowledged
        self._watermark = Watermark(config.straggle_ms / 1000)
        self._live = False
        self._threads = [
            threading.Thread(target=self._process_loop, name="alerts-process", daemon=True),
            threading.Thread(
                target=self.dispatcher.run, args=(self._stop,), name="alerts-send", daemon=True
            ),
        ]
        if influx is not None:
            exporter = TransitionExporter(influx, frame_link=self._frame_link)
            self._threads.append(
                threading.Thread(
                    target=self._export_loop, args=(exporter,), name="alerts-export", daemon=True
                )
            )

    def _frame_link(self, session: Session, alert: Alert) -> str | None:
        return self.processor.store.frame_link(session, alert, self.clock.now_ms())

    def _new_processor(self) -> AlertProcessor:
        return AlertProcessor(
            self._database,
            base_url=self.config.base_url,
            wall=self.clock,
            escalate_after_ms=self.config.escalate_after_ms,
            limits=self.config.limits,
            links=self.config.links,
        )

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Connect (persistent session) and start the threads."""
        props = persistent_session_properties(SESSION_EXPIRY_S, self.config.inflight)
        self._client.connect_async(
            self.config.broker.host,
            self.config.broker.port,
            keepalive=30,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Process what is queued, then stop sending and disconnect."""
        self._stop.set()
        with self._wake:
            self._wake.notify()
        self.dispatcher.wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self.dispatcher.close()
        self._client.disconnect()
        self._client.loop_stop()
        self._http.close()

    # --- network thread -----------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused connection: %s", reason)
            return
        self._connected.set()
        self.metrics.broker_up.set(1)
        log.info("alerts connected to broker (session present: %s)", flags.session_present)
        # retainHandling=1: retained statuses come once, when the subscription is new.
        options = SubscribeOptions(qos=1, retainHandling=1)
        client.subscribe([(SUBSCRIPTION, options), (CAMERA_SUBSCRIPTION, options)])

    def _on_disconnect(self, *args: Any) -> None:
        self._connected.clear()
        self.metrics.broker_up.set(0)
        if not self._stop.is_set():
            log.warning("alerts disconnected from broker; reconnecting")

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        received = _Received(
            message.mid, message.qos, message.topic, bytes(message.payload), self.clock.now_ms()
        )
        with self._wake:
            self._queue.append(received)
            self._last_activity = time.monotonic()
            if len(self._queue) >= self.config.batch_size:
                self._wake.notify()

    def _publish(self, topic: str, payload: bytes) -> None:
        """Publish for the MQTT channel; raises if the broker did not take it."""
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=self.config.send_timeout_s)
        if not info.is_published():
            raise RuntimeError("the broker did not acknowledge the publish in time")

    # --- processor thread ---------------------------------------------------------

    def _take_batch(self) -> list[_Received]:
        deadline = time.monotonic() + self.config.flush_ms / 1000
        with self._wake:
            while len(self._queue) < self.config.batch_size and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
            n = min(len(self._queue), self.config.batch_size)
            return [self._queue.popleft() for _ in range(n)]

    def _event_time(self, batch: list[_Received]) -> int:
        """Where event time may move: the watermark, or the wall once live; never back."""
        engine = self.processor.engine
        watermark = self._watermark.note(time.monotonic(), engine.newest_ms)
        live = self._live_now(watermark, idle_possible=not batch)
        return max(engine.now_ms, watermark, live or 0)

    def _live_now(self, watermark: int, *, idle_possible: bool) -> int | None:
        """The event time the wall clock vouches for, or None while catching up.

        Live once the watermark is close to the wall, or once nothing has come for
        ``idle_ms`` after something did (or after a restart with state to watch
        over): a service that has seen nothing yet waits for the stream, which may
        be a replay of the past (``make run`` replays the last day).
        """
        if not self._connected.is_set():
            return None  # our outage is no reason to call devices silent
        wall = self.clock.now_ms()
        # Idle counts from the last message or acknowledgement: a slow batch holds back
        # the broker (receive maximum), and that silence is ours, not the devices'.
        idle_ms = (time.monotonic() - self._last_activity) * 1000
        watching = self.processor.engine.newest_ms > 0 or self.processor.restored > 0
        idle = idle_possible and watching and idle_ms >= self.config.idle_ms
        live = watermark >= wall - self.config.live_lag_ms or idle
        if live != self._live:
            self._live = live
            why = "idle" if idle else "caught up" if live else "behind"
            log.info(
                "alerts: event time %s the wall clock (%s)", "follows" if live else "leaves", why
            )
        return wall - self.config.grace_ms if live else None

    def _process_loop(self) -> None:
        last_tick = last_reload = last_unknown_reload = last_status = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            batch = self._take_batch()
            now = time.monotonic()
            if now - last_status >= STATUS_EVERY_S:
                last_status = now
                self._log_status()
            if now - last_reload >= self.config.registry_refresh_s:
                last_reload = now
                self._guarded(self.processor.reload_registry)
            if batch or now - last_tick >= TICK_S:
                last_tick = now
                unknown = self._process(batch)
                if unknown and now - last_unknown_reload >= UNKNOWN_DEVICE_RELOAD_S:
                    last_unknown_reload = now  # maybe just registered: look again, not too often
                    self._guarded(self.processor.reload_registry)
            if stopping and not self._queue:
                return

    def _process(self, batch: list[_Received]) -> int:
        if self._must_recover:
            # A batch failed and so did restoring from SQL (SQL is down). Processing on
            # would build on rule states SQL never got, and nothing would reconnect to
            # bring the failed batch back. This batch, unacknowledged, comes back too.
            self._guarded(self._recover)
            return 0
        messages = [received.message for received in batch]
        now_ms = self._event_time(batch)
        unacknowledged = batch
        try:
            try:
                processed = self.processor.process(messages, now_ms)
            except SQLAlchemyError:
                raise
            except Exception:
                # A rule failed on something in the batch (a bug, not SQL): as the
                # broker would send it again, and again, find the message and drop it.
                log.exception("rules failed on %d messages; one at a time now", len(batch))
                self.metrics.rule_failures.labels("batch").inc()
                processed, unacknowledged = self._one_at_a_time(batch, now_ms), []
        except Exception as exc:
            # Nothing of the batch was committed: start again from what SQL holds, and
            # let the broker send the unacknowledged messages again.
            log.exception("processing %d messages failed; restoring from SQL", len(batch))
            self._note_sql_failure(exc)
            self._must_recover = True
            self._guarded(self._recover)
            return 0
        self.metrics.sql_up.set(1)
        self._count(processed)
        for received in unacknowledged:
            self._client.ack(received.mid, received.qos)
        if batch:
            self._last_activity = time.monotonic()
        self.dispatcher.wake.set()
        return processed.unknown

    def _one_at_a_time(self, batch: list[_Received], now_ms: int) -> Processed:
        """From what SQL holds, each message alone, then time; what the rules fail on is dropped.

        Each message is acknowledged once committed. One the rules fail on alone is
        logged, counted (``poison``) and acknowledged too: it would fail every time it
        came back, and stop every alert behind it. A failure in moving time (a timer's
        rule) drops nothing; time moves on the next round. SQL errors propagate: the
        messages not yet acknowledged come back.
        """
        self.processor = self._new_processor()
        done = Processed.nothing()
        for received in [*batch, None]:
            try:
                if received is None:
                    one = self.processor.process([], now_ms)
                else:  # time stays put until the messages are in, as in a batch
                    one = self.processor.process([received.message], move_time=False)
            except SQLAlchemyError:
                raise
            except Exception:
                what = "moving time" if received is None else received.describe()
                log.exception("rules failed on %s: dropped", what)
                self.metrics.rule_failures.labels("time" if received is None else "message").inc()
                one = Processed.nothing(poison=1) if received else Processed.nothing()
                self.processor = self._new_processor()
            if received is not None:
                self._client.ack(received.mid, received.qos)
            done += one
        return done

    def _count(self, processed: Processed) -> None:
        metrics = self.metrics
        for outcome, n in processed.outcomes.items():
            metrics.messages.labels(outcome).inc(n)
        for finding in processed.findings:
            metrics.findings.labels(finding.rule, "raised" if finding.raised else "cleared").inc()
        for transition, n in processed.transitions.items():
            metrics.transitions.labels(transition).inc(n)

    def _note_sql_failure(self, exc: BaseException) -> None:
        """sql_up 0 when SQL failed us; a bug elsewhere (a rule's) says nothing about SQL."""
        if isinstance(exc, SQLAlchemyError):
            self.metrics.sql_up.set(0)

    def _log_status(self) -> None:
        engine = self.processor.engine
        event_time = datetime.fromtimestamp(engine.now_ms / 1000, UTC).isoformat(timespec="seconds")
        log.info(
            "alerts: messages %s; event time %s%s",
            dict(engine.outcomes), event_time, " (live)" if self._live else "",
        )  # fmt: skip

    def _recover(self) -> None:
        self.processor = self._new_processor()
        self._must_recover = False
        self.metrics.sql_up.set(1)  # the new processor read the registry and rule states
        self._client.reconnect()

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:  # keep the last good state; the next round tries again
            self._note_sql_failure(exc)
            log.exception("alerts: %s failed", getattr(action, "__name__", action))

    # --- exporter thread ----------------------------------------------------------

    def _export_loop(self, exporter: TransitionExporter) -> None:
        while not self._stop.wait(TICK_S):
            try:
                while True:
                    with self._database.write() as session:
                        if not exporter.export(session):
                            break
            except InfluxError as exc:
                log.warning("writing alert events to InfluxDB failed (%s); retrying", exc)
            except Exception:
                log.exception("exporting alert events failed; retrying")
