"""The outbox dispatcher: sends owed notifications, retries with backoff, logs every attempt.

Notifications are rows written with the transition that owes them (``alerts.store``),
so nothing is sent that was not committed and nothing committed is lost. The
dispatcher claims due rows in one conditional UPDATE that moves their
``next_attempt_ms`` a lease ahead (only one claimer can win a row, and a row
whose sender died comes due again when the lease runs out), hands them to a
pool of senders, and records the outcomes in batches: each attempt, then the
row sent, due again after a backoff, or failed after ``max_attempts`` or an
error that retrying cannot fix.

In a burst every alert's first notification goes out before any alert's second,
so the first person hears of each alert as soon as possible.

Delivery is at least once: a crash between the receiver's answer and the commit
of that answer sends the message once more after the lease. The webhook carries
the notification id (``X-Gridwatch-Delivery``) so receivers can drop it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from alerts.channels import Channel, Delivery, DeliveryError
from alerts.metrics import AlertsMetrics
from alerts.models import FAILED, PENDING, SENT, AlertNotification, AlertSendAttempt
from alerts.sql import Database
from gridwatch.clock import Clock

log = logging.getLogger("gridwatch.alerts.outbox")

# The backlog gauge is a COUNT over the pending rows: not on every wake-up in a burst.
BACKLOG_EVERY_S = 5.0


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


@dataclass(frozen=True, slots=True)
class _Claimed:
    delivery: Delivery
    channel: str
    recipient: str
    attempts: int  # before this one


@dataclass(frozen=True, slots=True)
class _Outcome:
    claimed: _Claimed
    at_ms: int
    duration_ms: int
    status: int | None
    error: DeliveryError | None


class Dispatcher:
    """Sends due notifications with a pool of sender threads; ``run`` until stopped."""

    def __init__(
        self,
        database: Database,
        channels: Mapping[str, Channel],
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
        workers: int = 8,
        batch: int = 500,
        metrics: AlertsMetrics | None = None,
    ) -> None:
        self._database = database
        self._metrics = metrics
        self._backlog_counted = float("-inf")  # monotonic s
        self._channels = channels
        self._clock = clock
        self.policy = policy or RetryPolicy()
        self._batch = batch
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="alerts-send")
        self._inflight: set[int] = set()
        self._outcomes: deque[_Outcome] = deque()
        self._idle = threading.Condition()
        self.wake = threading.Event()

    def close(self) -> None:
        """Finish the sends under way, record them, and stop the pool."""
        self._pool.shutdown(wait=True)
        self._record()

    # --- the loop -----------------------------------------------------------------

    def run(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Dispatch until ``stop``: when woken (a commit owes something, a send ended) or polled."""
        while not stop.is_set():
            try:
                self._record()
                self.dispatch_due()
                wait_s = self._wait_s(poll_s)
            except Exception:  # a database hiccup must not end the dispatcher
                log.exception("dispatching notifications failed; trying again")
                wait_s = poll_s
            self.wake.wait(wait_s)
            self.wake.clear()

    def _wait_s(self, poll_s: float) -> float:
        with self._database.read() as session:
            due = session.scalar(
                select(func.min(AlertNotification.next_attempt_ms)).where(
                    AlertNotification.status == PENDING
                )
            )
            self._count_backlog(session, none_due=due is None)
        if due is None:
            return poll_s
        return min(poll_s, max(0.0, (due - self._clock.now_ms()) / 1000))

    def _count_backlog(self, session: Session, *, none_due: bool) -> None:
        """Set the outbox_pending gauge, at most every BACKLOG_EVERY_S (nothing due: 0, free)."""
        if self._metrics is None:
            return
        if none_due:
            self._metrics.outbox_pending.set(0)
            return
        now = time.monotonic()
        if now - self._backlog_counted < BACKLOG_EVERY_S:
            return
        self._backlog_counted = now
        pending = session.scalar(select(func.count()).where(AlertNotification.status == PENDING))
        self._metrics.outbox_pending.set(pending or 0)

    def drain(self, timeout_s: float = 30.0) -> None:
        """Dispatch and record until nothing is due or under way (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            sent = self.dispatch_due()
            with self._idle:
                while self._inflight and time.monotonic() < deadline:
                    self._idle.wait(0.05)
            self._record()
            if not sent and not self._inflight:
                return
        raise TimeoutError("notifications still due or under way")

    # --- claiming and sending -----------------------------------------------------

    def dispatch_due(self) -> int:
        """Claim the due notifications and hand them to the senders; returns how many."""
        now = self._clock.now_ms()
        with self._database.write() as session:
            claimed = self._claim(session, now)
        with self._idle:
            self._inflight.update(c.delivery.id for c in claimed)
        for item in claimed:
            self._pool.submit(self._send, item)
        return len(claimed)

    def _claim(self, session: Session, now: int) -> list[_Claimed]:
        due = [
            row_id
            for row_id in session.scalars(
                select(AlertNotification.id)
                .where(
                    AlertNotification.status == PENDING, AlertNotification.next_attempt_ms <= now
                )
                .order_by(AlertNotification.next_attempt_ms, AlertNotification.id)
                .limit(self._batch)
            )
            if row_id not in self._inflight
        ]
        if not due:
            return []
        n = AlertNotification
        rows = session.execute(
            update(n)
            .where(n.id.in_(due), n.status == PENDING, n.next_attempt_ms <= now)
            .values(next_attempt_ms=now + self.policy.lease_ms)
            .returning(
                n.id, n.transition_id, n.channel, n.recipient, n.config, n.content, n.attempts
            )
        ).all()
        rank: dict[int, int] = {}  # how many of its transition's notifications come before it
        ordered = []
        for row in sorted(rows, key=lambda r: r.id):
            ordered.append((rank.get(row.transition_id, 0), row.id, row))
            rank[row.transition_id] = rank.get(row.transition_id, 0) + 1
        return [
            _Claimed(
                Delivery(row.id, row.config, row.content), row.channel, row.recipient, row.attempts
            )
            for _, _, row in sorted(ordered, key=lambda item: item[:2])
        ]

    def _send(self, claimed: _Claimed) -> None:
        channel = self._channels.get(claimed.channel)
        started = time.monotonic()
        at_ms = self._clock.now_ms()
        status: int | None = None
        error: DeliveryError | None = None
        try:
            if channel is None:
                raise DeliveryError(f"no channel of type {claimed.channel!r}", retry=False)
            status = channel.send(claimed.delivery)
        except DeliveryError as exc:
            error, status = exc, exc.status
        except Exception as exc:  # a bug in a channel must not lose the row: try again later
            log.exception("notification %d: sending failed unexpectedly", claimed.delivery.id)
            error = DeliveryError(f"{type(exc).__name__}: {exc}", retry=True)
        duration_ms = int((time.monotonic() - started) * 1000)
        with self._idle:
            self._outcomes.append(_Outcome(claimed, at_ms, duration_ms, status, error))
            self._inflight.discard(claimed.delivery.id)
            self._idle.notify_all()
        self.wake.set()

    # --- recording ----------------------------------------------------------------

    def _record(self) -> None:
        """Write the finished attempts and their rows' new state, in one transaction."""
        with self._idle:
            outcomes = list(self._outcomes)
            self._outcomes.clear()
        if not outcomes:
            return
        settled = [self._settled_row(o) for o in outcomes]
        with self._database.write() as session:
            session.execute(insert(AlertSendAttempt), [self._attempt_row(o) for o in outcomes])
            session.execute(_SETTLE, settled)
        # Counted once recorded: after a failed commit the row is sent again when its
        # lease runs out, and counted then.
        if self._metrics is not None:
            for outcome, row in zip(outcomes, settled, strict=True):
                status = str(row["new_status"])  # sent, failed, or pending: will be retried
                counted = "retried" if status == PENDING else status
                self._metrics.notifications.labels(outcome.claimed.channel, counted).inc()

    def _attempt_row(self, outcome: _Outcome) -> dict[str, object]:
        error = outcome.error
        return {
            "notification_id": outcome.claimed.delivery.id,
            "at_ms": outcome.at_ms,
            "duration_ms": outcome.duration_ms,
            "ok": error is None,
            "status_code": outcome.status,
            "error": str(error)[:500] if error else None,
        }

    def _settled_row(self, outcome: _Outcome) -> dict[str, object]:
        claimed, error = outcome.claimed, outcome.error
        attempts = claimed.attempts + 1
        row: dict[str, object] = {
            "row_id": claimed.delivery.id,
            "new_attempts": attempts,
            "new_status": SENT,
            "new_sent_ms": outcome.at_ms,
            "new_error": None,
            "new_next_ms": outcome.at_ms,
        }
        if error is None:
            return row
        row.update(new_status=FAILED, new_sent_ms=None, new_error=str(error)[:500])
        what = f"notification {claimed.delivery.id} ({claimed.channel} to {claimed.recipient})"
        if error.retry and attempts < self.policy.max_attempts:
            row.update(
                new_status=PENDING, new_next_ms=outcome.at_ms + self.policy.backoff_ms(attempts)
            )
            log.info("%s attempt %d failed, retrying: %s", what, attempts, error)
        else:
            log.warning("%s failed after %d attempts: %s", what, attempts, error)
        return row


_table = AlertNotification.metadata.tables[AlertNotification.__tablename__]
_SETTLE = (
    update(_table)
    .where(_table.c.id == bindparam("row_id"))
    .values(
        attempts=bindparam("new_attempts"),
        status=bindparam("new_status"),
        sent_ms=bindparam("new_sent_ms"),
        last_error=bindparam("new_error"),
        next_attempt_ms=bindparam("new_next_ms"),
    )
)
