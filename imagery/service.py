"""The imagery service: snapshots in over MQTT, checked, blurred, stored; evidence and faults out.

Threads:

- the subscriber's reader (``broker.subscriber``): its own persistent MQTT 5
  session on ``sc/+/patrol_robot/+/#``: the snapshots, and the detection
  events that give each snapshot its time, place and scene (the image alone
  carries neither). Receive Maximum bounds what is held in memory: a few
  snapshots of at most 2 MiB;
- the worker: the messages waiting (at most Receive Maximum of them), in
  arrival order, as one batch. Each snapshot is checked and decoded
  (``imagery.pipeline``) and its files written; the batch's files are synced
  at once; then, in one transaction, each snapshot's row, camera state and
  owed events are recorded and the events published; the transaction
  commits, and only then are the messages acknowledged (group commit: the
  fsyncs and the commit are shared, "data accepted is data stored" holds for
  each message, and no SQL lock is held during the image work). A crash or
  an outage of SQL or of the broker leaves the batch with the broker, which
  delivers it again (every step is idempotent: files by hash, rows by robot
  and snapshot id); a message that makes the code fail is retried on its own,
  so that it costs the others nothing;
- housekeeping: community settings reloaded, checkpoint evidence left over
  published, retention enforced.

Events published (QoS 1):

- checkpoint evidence, on the robot's own event topic, as the checkpoint event
  of the contract (so the ``robot.coverage`` rule and storage take it as they
  take the robot's own): ``{"ts": <the detection's ts>, "seq": 0, "event":
  "checkpoint", "checkpoint_id", "lat", "lon", "source": "imagery",
  "snapshot_id"}``. ``seq`` 0 and ``source`` mark it as the backend's, not the
  robot's counter;
- camera faults, on ``sc/{community}/imagery``: ``imagery.events.CameraEvent``
  (``{"event": "camera_fault" | "camera_ok", "ts", "community", "kind":
  "patrol_robot", "device_id", "since_ms", "bad_frames", "snapshot_ids",
  "flags"}``), which the alerts service turns into the ``robot.camera`` alert.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from alerts.site import DAY_MS
from broker.address import BrokerAddress
from broker.subscriber import Delivery, Subscriber, shared, track_connection
from devices import KIND_NAMES, KINDS
from devices.contract import Channel, DeviceRecord, TopicError, device_topic, parse_topic
from devices.patrol_robot.schema import Detection
from gridwatch.clock import Clock
from imagery.checkpoints import CheckpointCode, on_robot_route, parse_checkpoint_qr
from imagery.events import CAMERA_FAULT, CAMERA_OK, MAX_NAMED_FRAMES, CameraEvent, camera_topic
from imagery.files import ImageFiles, Variant, sha256_hex
from imagery.metrics import ImageryMetrics
from imagery.models import EVIDENCE_PENDING, Snapshot, SnapshotRejection
from imagery.pipeline import Limits, Processed, Processor, Reason, Refused
from imagery.privacy import DetectorSettings
from imagery.quality import QualityThresholds
from imagery.store import (
    CameraChange,
    StoredFiles,
    evidence_due,
    expire,
    expire_orphan_rejections,
    mark_published,
    record_detection,
    record_image,
    record_rejection,
    update_camera,
)
from ingest.directory import DeviceDirectory, DeviceSource
from registry.db import writing
from registry.models import Community

log = logging.getLogger("gridwatch.imagery")

SUBSCRIPTION = "sc/+/patrol_robot/+/#"
KIND = "patrol_robot"
SESSION_EXPIRY_S = 7 * 86_400
# Snapshots are at most 2 MiB (refused above, but they must reach us to be counted).
MAX_PACKET_BYTES = 4 * 1024 * 1024
MAX_BACKOFF_S = 30.0
REJECTION_LOG_EVERY = 100
EXPIRE_BATCH = 1000


class PublishFailed(Exception):
    """The broker did not take an event in time."""


class Publisher(Protocol):
    """Where events go: returns once the broker has the message (QoS 1)."""

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish, or raise ``PublishFailed``."""
        ...


class CommunityImagery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A community's ``settings.imagery``: retention, camera-fault threshold, quality thresholds."""

    retention_days: int | None = None  # None: GW_IMAGERY_RETENTION_DAYS
    camera_fault_after: int = 3
    quality: QualityThresholds = QualityThresholds()


@dataclass(frozen=True, slots=True)
class ImageryConfig:
    """How the service connects, what it accepts, and how long it keeps images."""

    broker: BrokerAddress
    client_id: str = "gridwatch-imagery"
    share_group: str = ""
    inflight: int = 8
    registry_refresh_s: float = 30.0
    retention_days: int = 30
    retention_every_s: float = 3600.0
    evidence_every_s: float = 5.0
    limits: Limits = field(default_factory=Limits)
    detectors: DetectorSettings = field(default_factory=DetectorSettings)

    @property
    def topic(self) -> str:
        """The subscription, shared between replicas when a group is set."""
        return shared(SUBSCRIPTION, self.share_group)


class Unavailable(Exception):
    """SQL, the image directory or the broker is unavailable: keep the message, try later."""


@dataclass(slots=True)
class _Batch:
    """Messages recorded in one transaction; what waits for its commit."""

    session: Session
    after_commit: list[Callable[[], None]] = field(default_factory=list)


# What a message leaves to do in SQL once its image work is done.
_Record = Callable[[_Batch], None]


class ImageryService:
    """One imagery process: ``start()``, then ``stop()``."""

    def __init__(
        self,
        config: ImageryConfig,
        sessions: sessionmaker[Session],
        devices: DeviceSource,
        files: ImageFiles,
        publisher: Publisher,
        clock: Clock,
        metrics: ImageryMetrics | None = None,
    ) -> None:
        self.config = config
        self.files = files
        self.clock = clock
        self.metrics = metrics or ImageryMetrics()
        self._sessions = sessions
        self._publisher = publisher
        self._processor = Processor(config.limits, config.detectors)
        self.devices = DeviceDirectory(devices, config.registry_refresh_s)
        self._communities: dict[str, CommunityImagery] = {}
        self._queue: deque[Delivery] = deque()
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._rejections_seen: dict[Reason, int] = {}
        self._worker = threading.Thread(target=self._work, name="imagery-worker", daemon=True)
        self._housekeeper = threading.Thread(
            target=self._housekeeping, name="imagery-housekeeping", daemon=True
        )
        self._subscriber = Subscriber(
            config.broker,
            config.client_id,
            config.topic,
            self._on_message,
            receive_maximum=config.inflight,
            session_expiry_s=SESSION_EXPIRY_S,
            maximum_packet_size=MAX_PACKET_BYTES,
        )
        track_connection(self._subscriber, self.metrics.broker_up, log)
        self.subscribed = self._subscriber.subscribed
        self.metrics.backlog.set_function(lambda: len(self._queue))

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Load the community settings, connect, and start the threads."""
        self.reload_communities()
        self.devices.start()
        self._subscriber.start()
        self._worker.start()
        self._housekeeper.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the message in hand, then disconnect (the rest waits in the broker)."""
        self._stop.set()
        with self._wake:
            self._wake.notify()
        self._worker.join(timeout)
        self._housekeeper.join(timeout)
        self._subscriber.stop()
        self.devices.stop()

    def _on_message(self, delivery: Delivery) -> None:
        with self._wake:
            self._queue.append(delivery)
            self._wake.notify()

    # --- the worker ---------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                while not self._queue and not self._stop.is_set():
                    self._wake.wait(1.0)
                if self._stop.is_set():
                    return
                # No waiting for a batch to fill: under a light load a batch is one message.
                batch = [self._queue[i] for i in range(min(len(self._queue), self.config.inflight))]
            if not self._handle_with_retries(batch):
                return  # stopping: not acknowledged, the broker delivers them again
            with self._wake:
                for _ in batch:
                    self._queue.popleft()
            self._subscriber.ack(batch)

    def _handle_with_retries(self, batch: list[Delivery]) -> bool:
        backoff = 0.5
        while True:
            try:
                messages = [(d.topic, d.payload) for d in batch]
                self.handle_batch(messages, self.clock.now_ms())
                return True
            except Unavailable as exc:
                log.warning("%s; retrying in %.1f s", exc, backoff)
            except Exception:
                if len(batch) > 1:  # the batch was rolled back: find the culprit alone
                    return all(self._handle_with_retries([d]) for d in batch)
                # A bug must not wedge the queue: log it and let the message go.
                log.exception("handling %s failed; message dropped", batch[0].topic[:200])
                self.metrics.rejected.labels("internal_error").inc()
                return True
            if self._stop.wait(backoff):
                return False
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def handle(self, topic: str, payload: bytes, received_ms: int) -> None:
        """Handle one message completely (files, SQL, events); ``Unavailable`` if it must wait."""
        self.handle_batch([(topic, payload)], received_ms)

    def handle_batch(self, messages: Sequence[tuple[str, bytes]], received_ms: int) -> None:
        """Handle messages together: files synced once, one commit; ``Unavailable`` to wait.

        Nothing of the batch is committed unless all of it is.
        """
        try:
            records = [self._dispatch(topic, payload, received_ms) for topic, payload in messages]
            self.files.sync()  # the files before the rows that name them
            with writing(self._sessions) as session:
                batch = _Batch(session)
                for record in records:
                    if record is not None:
                        record(batch)
        except OperationalError as exc:
            raise Unavailable(f"SQL unavailable ({exc.orig})") from exc
        except OSError as exc:  # the image directory: full, unmounted, not writable
            raise Unavailable(f"cannot write the image files ({exc})") from exc
        for action in batch.after_commit:
            action()

    def _dispatch(self, topic: str, payload: bytes, received_ms: int) -> _Record | None:
        try:
            parsed = parse_topic(topic, KIND_NAMES)
        except TopicError as exc:
            if "/snapshot/" in topic:
                return self._reject(
                    topic, payload, received_ms, Refused(Reason.BAD_TOPIC, str(exc))
                )
            return None
        self.metrics.received.labels(parsed.channel.value).inc()
        if parsed.channel is Channel.SNAPSHOT:
            return self._snapshot(
                topic,
                parsed.community,
                parsed.device_id,
                parsed.snapshot_id or "",
                payload,
                received_ms,
            )
        if parsed.channel is Channel.EVENT:
            return self._event(parsed.community, parsed.device_id, payload)
        return None

    # --- snapshots ----------------------------------------------------------------------

    def _snapshot(
        self,
        topic: str,
        community: str,
        device_id: str,
        snapshot_id: str,
        payload: bytes,
        received_ms: int,
    ) -> _Record:
        started = time.perf_counter()
        try:
            device = self._device(community, device_id)
            settings = self.community(community)
            processed = self._processor.process(payload, settings.quality)
        except Refused as refusal:
            return self._reject(topic, payload, received_ms, refusal)
        checkpoint = self._checkpoint(device, processed)
        stored = StoredFiles(
            self.files.put(Variant.ORIGINAL, payload, sync=False),
            self.files.put(Variant.PRIVACY, processed.privacy.data, sync=False),
            self.files.put(Variant.THUMBNAIL, processed.thumbnail.data, sync=False),
        )

        def record(batch: _Batch) -> None:
            session = batch.session
            row, orphans = record_image(
                session,
                device,
                snapshot_id,
                processed,
                stored,
                original_bytes=len(payload),
                received_ms=received_ms,
                checkpoint=checkpoint,
            )
            change = update_camera(
                session, row, bad=processed.quality.bad, fault_after=settings.camera_fault_after
            )
            if change is not None:
                self._publish_camera(change, processed)
            self._publish_evidence(session, [row])
            seconds = time.perf_counter() - started
            batch.after_commit.append(lambda: self._delete(orphans))
            batch.after_commit.append(lambda: self._count_stored(processed, seconds))

        return record

    def _device(self, community: str, device_id: str) -> DeviceRecord:
        record = self.devices.get(device_id)
        if record is None:
            raise Refused(Reason.UNKNOWN_DEVICE, f"{device_id} is not registered")
        if record.community != community or record.kind != KIND:
            detail = f"{device_id} is registered as {record.community}/{record.kind}"
            raise Refused(Reason.DEVICE_MISMATCH, detail)
        return record

    def _checkpoint(self, device: DeviceRecord, processed: Processed) -> CheckpointCode | None:
        """The first QR code naming a checkpoint of this robot's routes."""
        for text in processed.qr_texts:
            code = parse_checkpoint_qr(text)
            if code is None:
                self.metrics.checkpoints.labels("unreadable").inc()
            elif on_robot_route(code, device.community, device.attributes):
                return code
            else:
                self.metrics.checkpoints.labels("foreign").inc()
                log.info("%s saw checkpoint %s, not on its routes", device.device_id, code)
        return None

    def _count_stored(self, processed: Processed, seconds: float) -> None:
        self.metrics.stored.inc()
        self.metrics.process_seconds.observe(seconds)
        for flag in processed.quality.flags:
            self.metrics.flagged.labels(flag).inc()
        if processed.faces:
            self.metrics.blurred.labels("face").inc(processed.faces)
        if processed.people:
            self.metrics.blurred.labels("person").inc(processed.people)

    def _reject(self, topic: str, payload: bytes, received_ms: int, refusal: Refused) -> _Record:
        reason = refusal.reason
        self.metrics.rejected.labels(reason.value).inc()
        seen = self._rejections_seen.get(reason, 0)
        self._rejections_seen[reason] = seen + 1
        if seen % REJECTION_LOG_EVERY == 0:  # a sample: a flood must not flood the log
            log.warning(
                "refused snapshot (%s, %d so far) on %s: %s",
                reason.value,
                seen + 1,
                topic[:200],
                refusal.detail[:300],
            )
        parts = topic.split("/")
        rejection = SnapshotRejection(
            received_ms=received_ms,
            community_id=parts[1][:32] if len(parts) > 1 else None,
            device_id=parts[3][:64] if len(parts) > 3 else None,
            snapshot_id=parts[5][:64] if len(parts) > 5 else None,
            topic=topic[:256],
            reason=reason.value,
            detail=refusal.detail[:300],
            size=len(payload),
            sha256=sha256_hex(payload),
            head=payload[:32].hex(),
        )
        return lambda batch: record_rejection(batch.session, rejection)

    # --- detection events -----------------------------------------------------------------

    def _event(self, community: str, device_id: str, payload: bytes) -> _Record | None:
        device = self.devices.get(device_id)
        if device is None or device.community != community or device.kind != KIND:
            return None  # ingest refuses and dead-letters it
        try:
            event = KINDS[KIND].event_decoder.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None  # likewise
        if not isinstance(event, Detection) or event.snapshot_id is None:
            return None
        detection = event

        def record(batch: _Batch) -> None:
            row = record_detection(batch.session, device, detection)
            self._publish_evidence(batch.session, [row])

        return record

    # --- events out ---------------------------------------------------------------------------

    def _publish(self, topic: str, message: object) -> None:
        try:
            self._publisher.publish(topic, msgspec.json.encode(message))
        except PublishFailed as exc:
            raise Unavailable(f"the broker did not take an event ({exc})") from exc

    def _publish_evidence(self, session: Session, rows: list[Snapshot]) -> int:
        """Publish the checkpoint evidence of rows that have both a checkpoint and a time."""
        due = [r for r in rows if r.evidence == EVIDENCE_PENDING and r.detection_ts is not None]
        for row in due:
            message = {
                "ts": row.detection_ts,
                "seq": 0,
                "event": "checkpoint",
                "checkpoint_id": row.checkpoint_id,
                "lat": row.lat,
                "lon": row.lon,
                "source": "imagery",
                "snapshot_id": row.snapshot_id,
            }
            topic = device_topic(row.community_id, KIND, row.device_id, Channel.EVENT)
            self._publish(topic, message)
            self.metrics.checkpoints.labels("published").inc()
        mark_published(session, due)
        return len(due)

    def _publish_camera(self, change: CameraChange, processed: Processed) -> None:
        message = CameraEvent(
            event=CAMERA_FAULT if change.fault else CAMERA_OK,
            ts=change.at_ms,
            community=change.community,
            kind="patrol_robot",
            device_id=change.device_id,
            since_ms=change.since_ms,
            bad_frames=change.bad_frames,
            snapshot_ids=list(change.snapshot_ids[-MAX_NAMED_FRAMES:]),
            flags=processed.quality.flags,
        )
        self._publish(camera_topic(change.community), message)
        self.metrics.camera_events.labels(message.event).inc()
        log.info(
            "%s: %s (%d bad frames in a row)", change.device_id, message.event, change.bad_frames
        )

    def _delete(self, files: list[tuple[Variant, str]]) -> None:
        for variant, sha in files:
            self.files.delete(variant, sha)

    # --- housekeeping ---------------------------------------------------------------------------

    def community(self, community: str) -> CommunityImagery:
        """A community's imagery settings (defaults for one without)."""
        return self._communities.get(community) or CommunityImagery()

    def reload_communities(self) -> None:
        """Read every community's ``settings.imagery`` (bad ones are logged, defaults kept)."""
        with self._sessions() as session:
            rows = session.execute(select(Community.id, Community.settings)).all()
        communities = {}
        for community, settings in rows:
            try:
                communities[community] = community_settings(settings or {})
            except msgspec.ValidationError as exc:
                if community not in self._communities:
                    log.warning("settings.imagery of %s ignored: %s", community, exc)
                communities[community] = CommunityImagery()
        self._communities = communities

    def publish_due_evidence(self) -> int:
        """Publish checkpoint evidence left pending (a replica race, a failed publish)."""
        with writing(self._sessions) as session:
            return self._publish_evidence(session, list(evidence_due(session)))

    def enforce_retention(self) -> int:
        """Delete what is past each community's retention; returns the snapshots deleted."""
        now = self.clock.now_ms()
        with self._sessions() as session:
            stored = set(session.scalars(select(Snapshot.community_id).distinct()))
        deleted = 0
        for community in sorted(stored | set(self._communities)):
            days = self.community(community).retention_days or self.config.retention_days
            while True:
                with writing(self._sessions) as session:
                    n, orphans = expire(session, community, now - days * DAY_MS, EXPIRE_BATCH)
                self._delete(orphans)
                deleted += n
                self.metrics.expired.inc(n)
                if n < EXPIRE_BATCH:
                    break
        with writing(self._sessions) as session:
            expire_orphan_rejections(
                session, self._communities, now - self.config.retention_days * DAY_MS
            )
        if deleted:
            log.info("retention: deleted %d snapshots", deleted)
        return deleted

    def _housekeeping(self) -> None:
        config = self.config
        jobs: list[tuple[float, Callable[[], object]]] = [
            (config.registry_refresh_s, self.reload_communities),
            (config.evidence_every_s, self.publish_due_evidence),
            (config.retention_every_s, self.enforce_retention),
        ]
        due = [time.monotonic() + every for every, _ in jobs]
        due[2] = time.monotonic()  # retention once at start: a service down for days catches up
        while not self._stop.wait(min(1.0, max(0.0, min(due) - time.monotonic()))):
            for i, (every, job) in enumerate(jobs):
                if time.monotonic() < due[i]:
                    continue
                due[i] = time.monotonic() + every
                try:
                    job()
                except Exception:  # one failed round must not end housekeeping
                    log.exception("imagery housekeeping (%s) failed", getattr(job, "__name__", job))


def community_settings(raw: Mapping[str, object]) -> CommunityImagery:
    """A community's imagery settings from its registry settings (``ValidationError`` if bad)."""
    return msgspec.convert(raw.get("imagery", {}), CommunityImagery)
