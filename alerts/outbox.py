"""The outbox dispatcher: sends owed notifications, retries with backoff, logs every attempt.

Notifications are rows written with the transition that owes them (``alerts.store``),
so nothing is sent that was not committed and nothing committed is lost. A
dispatcher claims a due row by moving its ``next_attempt_ms`` one lease ahead
in a conditional UPDATE: only one claimer can win, and a row whose sender died
comes due again when the lease runs out. After each attempt it records the
attempt and either marks the row sent, schedules the next try (exponential
backoff), or gives up (marks it failed) after ``max_attempts`` or on an error
that retrying cannot fix.

Delivery is at least once: a crash between the receiver's answer and the
commit of that answer sends the message once more after the lease. The webhook
carries the notification id (``X-Gridwatch-Delivery``) so receivers can drop it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from alerts.channels import Channel, Delivery, DeliveryError
from alerts.models import FAILED, PENDING, SENT, AlertNotification, AlertSendAttempt
from alerts.sql import Database
from gridwatch.clock import Clock

log = logging.getLogger("gridwatch.alerts.outbox")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to try."""

    max_attempts: int = 8
    first_backoff_ms: int = 2_000
    max_backoff_ms: int = 300_000
    lease_ms: int = 60_000  # longer than any one attempt can take (HTTP timeout)

    def backoff_ms(self, attempts: int) -> int:
        """Wait after the ``attempts``-th failure: 2 s, 4 s, 8 s ... at most 5 min."""
        return int(min(self.first_backoff_ms * 2 ** (attempts - 1), self.max_backoff_ms))


class Dispatcher:
    """Sends due notifications with a small pool of threads; ``run`` until stopped."""

    def __init__(
        self,
        database: Database,
        channels: Mapping[str, Channel],
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
        workers: int = 4,
        batch: int = 200,
    ) -> None:
        self._database = database
        self._channels = channels
        self._clock = clock
        self.policy = policy or RetryPolicy()
        self._batch = batch
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="alerts-send")
        self._inflight: set[int] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.wake = threading.Event()

    def close(self) -> None:
        """Finish the sends under way and stop the pool."""
        self._pool.shutdown(wait=True)

    def run(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Dispatch until ``stop``: when woken (a commit owes something) or every ``poll_s``."""
        while not stop.is_set():
            try:
                self.dispatch_due()
            except Exception:  # a database hiccup must not end the dispatcher
                log.exception("dispatching notifications failed; trying again")
            self.wake.wait(self._wait_s(poll_s))
            self.wake.clear()

    def _wait_s(self, poll_s: float) -> float:
        with self._database.read() as session:
            due = session.scalar(
                select(func.min(AlertNotification.next_attempt_ms)).where(
                    AlertNotification.status == PENDING
                )
            )
        if due is None:
            return poll_s
        return min(poll_s, max(0.0, (due - self._clock.now_ms()) / 1000))

    def dispatch_due(self) -> int:
        """Claim the due notifications and hand them to the senders; returns how many."""
        now = self._clock.now_ms()
        with self._database.write() as session:
            rows = session.execute(
                select(AlertNotification.id, AlertNotification.next_attempt_ms)
                .where(
                    AlertNotification.status == PENDING,
                    AlertNotification.next_attempt_ms <= now,
                )
                .order_by(AlertNotification.next_attempt_ms, AlertNotification.id)
                .limit(self._batch)
            ).all()
            claimed = [
                notification_id
                for notification_id, due in rows
                if notification_id not in self._inflight
                and self._claim(session, notification_id, due, now)
            ]
        with self._lock:
            self._inflight.update(claimed)
        for notification_id in claimed:
            self._pool.submit(self._attempt, notification_id)
        return len(claimed)

    def _claim(self, session: Session, notification_id: int, due: int, now: int) -> bool:
        result = session.execute(
            update(AlertNotification)
            .where(
                AlertNotification.id == notification_id,
                AlertNotification.status == PENDING,
                AlertNotification.next_attempt_ms == due,
            )
            .values(next_attempt_ms=now + self.policy.lease_ms)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def drain(self, timeout_s: float = 30.0) -> None:
        """Dispatch until nothing is due or under way (tests, shutdown); raises on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            sent = self.dispatch_due()
            with self._idle:
                while self._inflight and time.monotonic() < deadline:
                    self._idle.wait(0.05)
            if not sent and not self._inflight:
                return
        raise TimeoutError("notifications still due or under way")

    def _attempt(self, notification_id: int) -> None:
        try:
            self._send(notification_id)
        except Exception:
            log.exception("notification %d: recording the attempt failed", notification_id)
        finally:
            with self._idle:
                self._inflight.discard(notification_id)
                self._idle.notify_all()

    def _send(self, notification_id: int) -> None:
        with self._database.read() as session:
            row = session.get(AlertNotification, notification_id)
            if row is None:
                return
            delivery = Delivery(row.id, row.config, row.content)
            channel_name = row.channel
        channel = self._channels.get(channel_name)
        started = time.monotonic()
        at_ms = self._clock.now_ms()
        status: int | None = None
        error: DeliveryError | None = None
        if channel is None:
            error = DeliveryError(f"no channel of type {channel_name!r}", retry=False)
        else:
            try:
                status = channel.send(delivery)
            except DeliveryError as exc:
                error, status = exc, exc.status
        duration_ms = int((time.monotonic() - started) * 1000)
        self._record(notification_id, at_ms, duration_ms, status, error)

    def _record(
        self,
        notification_id: int,
        at_ms: int,
        duration_ms: int,
        status: int | None,
        error: DeliveryError | None,
    ) -> None:
        with self._database.write() as session:
            row = session.get(AlertNotification, notification_id)
            if row is None:
                return
            row.attempts += 1
            session.add(
                AlertSendAttempt(
                    notification_id=notification_id,
                    at_ms=at_ms,
                    duration_ms=duration_ms,
                    ok=error is None,
                    status_code=status,
                    error=str(error)[:500] if error else None,
                )
            )
            if error is None:
                row.status, row.sent_ms, row.last_error = SENT, at_ms, None
                return
            row.last_error = str(error)[:500]
            if error.retry and row.attempts < self.policy.max_attempts:
                row.next_attempt_ms = at_ms + self.policy.backoff_ms(row.attempts)
                log.info(
                    "notification %d (%s to %s) attempt %d failed, retrying: %s",
                    row.id, row.channel, row.recipient, row.attempts, error,
                )  # fmt: skip
            else:
                row.status = FAILED
                log.warning(
                    "notification %d (%s to %s) failed after %d attempts: %s",
                    row.id, row.channel, row.recipient, row.attempts, error,
                )  # fmt: skip
