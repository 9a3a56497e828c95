"""The ingestor: MQTT in, InfluxDB out, acknowledging only what InfluxDB holds.

Two threads: the subscriber's reader thread decodes each message
(``decode_message``) and queues it; the writer thread takes the queue in
batches, writes the accepted points and the dead letters, and only then
acknowledges the whole batch in arrival order. The session is persistent (MQTT 5, fixed client id,
``clean_start=False``) and bounds its own in-flight window with Receive
Maximum, so while InfluxDB is down the backlog waits in the broker, not here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from broker.address import BrokerAddress
from broker.subscriber import Delivery, Subscriber, shared, track_connection
from gridwatch.clock import Clock
from influx.client import BatchTooLarge, InfluxClient, InfluxRejected, InfluxUnavailable
from ingest.deadletters import ArrivalClock, dead_letter_line
from ingest.decode import Accepted, Ignored, Limits, Outcome, Reason, Rejected, decode_message
from ingest.directory import DeviceDirectory, DeviceSource
from ingest.metrics import IngestMetrics
from ingest.selfreport import SelfReport

log = logging.getLogger("gridwatch.ingest")

SUBSCRIPTION = "sc/+/+/+/#"
SESSION_EXPIRY_S = 7 * 86_400
MAX_BACKOFF_S = 15.0
REJECTION_LOG_EVERY = 1000


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """How the ingestor connects, batches and bounds itself."""

    broker: BrokerAddress
    client_id: str = "gridwatch-ingest"
    share_group: str = ""
    batch_size: int = 5000
    flush_ms: int = 200
    inflight: int = 20_000
    registry_refresh_s: float = 30.0
    limits: Limits = field(default_factory=Limits)

    @property
    def topic(self) -> str:
        """The subscription, shared between replicas when a group is set."""
        return shared(SUBSCRIPTION, self.share_group)


@dataclass(slots=True)
class _Pending:
    """A received message until it is acknowledged: only what the write and the ack need.

    Kept small on purpose: up to ``inflight`` of these are held at once.
    """

    qos: int
    packet_id: int
    generation: int
    kind: str
    topic: str
    line: str | None  # the point to write, for an accepted message
    rejection: Rejected | None
    payload: bytes  # kept only for a rejected message, for its dead letter
    received: float  # time.monotonic() at arrival
    arrival_ns: int  # unique: the dead letter's timestamp if it comes to that


class Ingestor:
    """One ingest process (or thread, in tests): ``start()``, then ``stop()``."""

    def __init__(
        self,
        config: IngestConfig,
        influx: InfluxClient,
        devices: DeviceSource,
        clock: Clock,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.config = config
        self.influx = influx
        self.clock = clock
        self.metrics = metrics or IngestMetrics()
        self.report = SelfReport(self.metrics, influx, config.client_id, clock.now_ms)
        self.devices = DeviceDirectory(
            devices, config.registry_refresh_s, on_change=self.report.devices_changed
        )
        self._queue: deque[_Pending] = deque()
        self._writing: list[_Pending] = []  # taken by the writer, not yet acknowledged
        self._arrivals = ArrivalClock()
        self._influx_up: bool | None = None
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        # Computed when scraped: nothing on the per-message path.
        self.metrics.backlog.set_function(lambda: len(self._queue) + len(self._writing))
        self.metrics.oldest_unacked.set_function(self._oldest_unacked_s)
        self._subscriber = Subscriber(
            config.broker,
            config.client_id,
            config.topic,
            self._on_message,
            receive_maximum=config.inflight,
            session_expiry_s=SESSION_EXPIRY_S,
        )
        track_connection(self._subscriber, self.metrics.broker_up, log)
        self.subscribed = self._subscriber.subscribed
        self._rejections_seen: dict[Reason, int] = {}

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Connect (persistent session) and start the network and writer threads."""
        self.devices.start()
        self.report.start()
        self._subscriber.start()
        self._writer.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (if InfluxDB takes it), acknowledge it, then disconnect."""
        self._stop.set()
        with self._wake:
            self._wake.notify()
        self._writer.join(timeout)
        self._subscriber.stop()
        self.devices.stop()
        self.report.stop()

    # --- network thread -----------------------------------------------------------

    def _on_message(self, delivery: Delivery) -> None:
        outcome = decode_message(
            delivery.topic,
            delivery.payload,
            devices=self.devices,
            now_ms=self.clock.now_ms(),
            limits=self.config.limits,
        )
        self._count(outcome, delivery.topic)
        rejected = outcome if isinstance(outcome, Rejected) else None
        pending = _Pending(
            delivery.qos,
            delivery.packet_id,
            delivery.generation,
            outcome.kind if not isinstance(outcome, Ignored) else "",
            delivery.topic,
            outcome.line if isinstance(outcome, Accepted) else None,
            rejected,
            delivery.payload if rejected else b"",
            time.monotonic(),
            self._arrivals.stamp(),
        )
        with self._wake:
            self._queue.append(pending)
            if len(self._queue) >= self.config.batch_size:
                self._wake.notify()

    def _count(self, outcome: Outcome, topic: str) -> None:
        if isinstance(outcome, Ignored):
            self.metrics.ignored.labels(outcome.channel).inc()
            return
        self.metrics.received.labels(outcome.kind).inc()
        if isinstance(outcome, Rejected):
            self._count_rejection(outcome, topic)

    def _count_rejection(self, rejection: Rejected, topic: str) -> None:
        self.metrics.rejected.labels(rejection.reason.value, rejection.kind).inc()
        seen = self._rejections_seen.get(rejection.reason, 0)
        self._rejections_seen[rejection.reason] = seen + 1
        if seen % REJECTION_LOG_EVERY == 0:  # a sample, so a flood cannot flood the log
            log.warning(
                "rejected %s (%d so far) on %s: %s",
                rejection.reason.value,
                seen + 1,
                topic[:200],
                rejection.detail[:300],
            )

    # --- writer thread ------------------------------------------------------------

    def _take_batch(self) -> list[_Pending]:
        deadline = time.monotonic() + self.config.flush_ms / 1000
        with self._wake:
            while len(self._queue) < self.config.batch_size and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
            n = min(len(self._queue), self.config.batch_size)
            self._writing = [self._queue.popleft() for _ in range(n)]
            return self._writing

    def _write_loop(self) -> None:
        while True:
            stopping = self._stop.is_set()
            batch = self._take_batch()
            if batch:
                self._deliver(batch, give_up_on_outage=stopping)
            if stopping and not self._queue:
                return

    def _deliver(self, batch: list[_Pending], *, give_up_on_outage: bool) -> None:
        """Store a batch (points, then dead letters), then acknowledge all of it in order."""
        backoff = 0.5
        while True:
            try:
                refused = self._write_points([p for p in batch if p.line is not None])
                self._write_dead_letters(batch, refused)
                self._influx_state(up=True)
                break
            except InfluxUnavailable as exc:
                self._influx_state(up=False, why=str(exc))
                self.metrics.write_retries.inc()
                if give_up_on_outage:
                    log.warning("stopping with %d messages unacknowledged", len(batch))
                    return  # not acknowledged: the broker redelivers them to the next run
                delay = exc.retry_after if exc.retry_after is not None else backoff
                if self._stop.wait(min(delay, MAX_BACKOFF_S)):
                    give_up_on_outage = True
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        for pending, rejection in refused:
            self._count_rejection(rejection, pending.topic)
        refused_ids = {id(p) for p, _ in refused}
        written = Counter(p.kind for p in batch if p.line is not None and id(p) not in refused_ids)
        for kind, n in written.items():
            self.metrics.written.labels(kind).inc(n)
        self._subscriber.ack(batch)
        self._writing = []

    def _influx_state(self, *, up: bool, why: str = "") -> None:
        """Log InfluxDB going down or coming back once, not at every retry."""
        if up != self._influx_up:
            if up and self._influx_up is False:
                log.info("InfluxDB is back: writing resumes")
            elif not up:
                log.warning("InfluxDB unavailable (%s): holding acks, retrying with backoff", why)
            self._influx_up = up
        self.metrics.influx_up.set(1 if up else 0)

    def _write_dead_letters(
        self, batch: list[_Pending], refused: list[tuple[_Pending, Rejected]]
    ) -> None:
        lines = [self._dead_letter(p, p.rejection, p.payload) for p in batch if p.rejection]
        lines += [self._dead_letter(p, r, (p.line or "").encode()) for p, r in refused]
        if lines:
            self.influx.write("\n".join(lines).encode(), precision="ns")

    @staticmethod
    def _dead_letter(pending: _Pending, rejection: Rejected, payload: bytes) -> str:
        return dead_letter_line(
            reason=rejection.reason.value,
            kind=rejection.kind,
            topic=pending.topic,
            detail=rejection.detail,
            payload=payload,
            arrival_ns=pending.arrival_ns,
        )

    def _oldest_unacked_s(self) -> float:
        with self._wake:
            oldest = (
                self._writing[0] if self._writing else (self._queue[0] if self._queue else None)
            )
        return time.monotonic() - oldest.received if oldest is not None else 0.0

    def _write_points(self, pending: list[_Pending]) -> list[tuple[_Pending, Rejected]]:
        """Write points; split on 413 and 400 until the points InfluxDB refuses are isolated.

        Returns the refused ones (to be dead-lettered); everything else is written.
        """
        if not pending:
            return []
        started = time.perf_counter()
        try:
            self.influx.write("\n".join(p.line or "" for p in pending).encode())
        except (BatchTooLarge, InfluxRejected) as exc:
            if len(pending) == 1:
                return [
                    (pending[0], Rejected(Reason.INFLUX_REJECTED, exc.message, pending[0].kind))
                ]
            # Writes are idempotent (same series and ts overwrite), so re-sending the
            # halves that InfluxDB had already taken costs time, never duplicates.
            middle = len(pending) // 2
            return self._write_points(pending[:middle]) + self._write_points(pending[middle:])
        elapsed = time.perf_counter() - started
        self.metrics.write_seconds.observe(elapsed)
        self.report.write_ms_max = max(self.report.write_ms_max, elapsed * 1000)
        self.metrics.batch_size.observe(len(pending))
        return []
