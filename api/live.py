"""The live stream: alerts and device status changes, from MQTT to each SSE subscriber.

The API's broker link subscribes to ``sc/+/alerts`` (every alert transition, as
the alerts service publishes it for control rooms, see alerts/channels.py) and
``sc/+/+/+/status``. Retained statuses replayed at subscription are skipped:
the stream carries changes. A status counts only from a device registered
under the topic's community and kind (the topic alone is never trusted).

Each subscriber has a bounded queue and a filter (its principal's scope and
the community it asked for). A subscriber that falls more than
``QUEUE_SIZE`` events behind is dropped with a last ``overflow`` event; its
EventSource reconnects and carries on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy.orm import Session, sessionmaker

from api.access import GridMaps, Principal
from devices import contract
from devices.kind import STATUS_DECODER

log = logging.getLogger("gridwatch.api")

ALERTS_FILTER = "sc/+/alerts"
STATUS_FILTER = "sc/+/+/+/status"
QUEUE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One event for the stream: ``alert`` or ``status``, its community, grid and body."""

    type: str
    community: str
    grid_id: int | None  # status: the device's grid
    grid_name: str | None  # alert: the grid it was routed to
    data: dict[str, Any]


@dataclass(eq=False)
class Subscriber:
    """One open stream."""

    principal: Principal
    community: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[LiveEvent | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE + 1)
    )

    def wants(self, event: LiveEvent) -> bool:
        """True if the event is within this subscriber's scope and filter."""
        if self.community is not None and event.community != self.community:
            return False
        if not self.principal.sees_community(event.community):
            return False
        if not self.principal.grid_scoped:
            return True
        if event.type == "alert":
            return event.grid_name in self.principal.grid_names
        return event.grid_id in self.principal.grid_ids

    def offer(self, event: LiveEvent) -> None:
        """Queue the event (on the subscriber's loop); a full queue ends the stream."""
        if self.queue.qsize() >= QUEUE_SIZE:
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(event)


class LiveHub:
    """Fans MQTT messages out to the subscribers that want them."""

    def __init__(self, sessions: sessionmaker[Session], grid_maps: GridMaps) -> None:
        self._sessions = sessions
        self._grid_maps = grid_maps
        self._subscribers: set[Subscriber] = set()
        self._lock = threading.Lock()

    @property
    def subscribers(self) -> int:
        """Open streams."""
        return len(self._subscribers)

    def subscribe(self, principal: Principal, community: str | None) -> Subscriber:
        """Open a stream on the running event loop."""
        subscriber = Subscriber(principal, community, asyncio.get_running_loop())
        with self._lock:
            self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Close a stream."""
        with self._lock:
            self._subscribers.discard(subscriber)

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        """Turn a broker message into an event and hand it to every subscriber that wants it."""
        if retained or not self._subscribers:
            return
        event = self._event(topic, payload)
        if event is None:
            return
        with self._lock:
            targets = [s for s in self._subscribers if s.wants(event)]
        for subscriber in targets:
            subscriber.loop.call_soon_threadsafe(subscriber.offer, event)

    def _event(self, topic: str, payload: bytes) -> LiveEvent | None:
        parts = topic.split("/")
        try:
            if len(parts) == 3 and parts[2] == "alerts":
                return _alert_event(parts[1], payload)
            return self._status_event(topic, payload)
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.debug("live: ignored %s: %s", topic, exc)
            return None

    def _status_event(self, topic: str, payload: bytes) -> LiveEvent | None:
        parsed = contract.parse_topic(topic)
        status = STATUS_DECODER.decode(payload)
        with self._sessions() as session:
            grid_map = self._grid_maps.get(session, parsed.community)
        if grid_map.kinds.get(parsed.device_id) != parsed.kind:
            return None
        data = {
            "device_id": parsed.device_id,
            "community": parsed.community,
            "kind": parsed.kind,
            "online": status.online,
            "ts": status.ts,
        }
        grid = grid_map.device_grid.get(parsed.device_id)
        return LiveEvent("status", parsed.community, grid, None, data)


def _alert_event(community: str, payload: bytes) -> LiveEvent:
    data = json.loads(payload)
    if not isinstance(data, dict) or data.get("community") != community:
        raise ValueError("not an alert event of this community")
    return LiveEvent("alert", community, None, data.get("grid"), data)
