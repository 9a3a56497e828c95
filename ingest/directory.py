"""Which devices exist: the registry as ingest sees it, kept current without stalling it.

The whole list is reloaded in a background thread (at city scale a reload is
seconds of SQL, which must not block the MQTT network thread). A message from
a device not in the list triggers a one-row lookup instead, since it may have
been registered a moment ago; the answer "not registered" is remembered for a
while, so a flood from unregistered ids costs one query per id, not one per message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from devices.contract import DeviceRecord

log = logging.getLogger("gridwatch.ingest")

NEGATIVE_TTL_S = 10.0
MAX_LOOKUPS_PER_S = 20.0


class DeviceSource(Protocol):
    """Where devices come from (the SQL registry in production, a dict in tests)."""

    def load_all(self) -> Mapping[str, DeviceRecord]:
        """Every registered device by id."""
        ...

    def lookup(self, device_id: str) -> DeviceRecord | None:
        """One device, or None if it is not registered."""
        ...


class StaticDevices:
    """A ``DeviceSource`` over a mapping that the caller may change (tests)."""

    def __init__(
        self, devices: Mapping[str, DeviceRecord] | Callable[[], Mapping[str, DeviceRecord]]
    ) -> None:
        self._devices = devices

    def _current(self) -> Mapping[str, DeviceRecord]:
        return self._devices() if callable(self._devices) else self._devices

    def load_all(self) -> Mapping[str, DeviceRecord]:
        """A copy of the mapping."""
        return dict(self._current())

    def lookup(self, device_id: str) -> DeviceRecord | None:
        """One device from the mapping."""
        return self._current().get(device_id)


class DeviceDirectory(Mapping[str, DeviceRecord]):
    """A mapping of device ids to records that refreshes itself."""

    def __init__(
        self,
        source: DeviceSource,
        refresh_s: float,
        on_change: Callable[[list[DeviceRecord]], None] | None = None,
    ) -> None:
        self._source = source
        self._refresh_s = refresh_s
        self._on_change = on_change
        self._devices: dict[str, DeviceRecord] = dict(source.load_all())
        self._announce(list(self._devices.values()))
        self._unknown_until: dict[str, float] = {}
        self._lookup_budget = MAX_LOOKUPS_PER_S
        self._budget_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._refresh_loop, name="ingest-registry", daemon=True
        )

    def start(self) -> None:
        """Start refreshing in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing."""
        self._stop.set()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh_s):
            try:
                fresh = dict(self._source.load_all())
                self._announce([r for i, r in fresh.items() if self._devices.get(i) != r])
                self._devices = fresh
                self._unknown_until.clear()
            except Exception:  # a registry hiccup must not stop ingest: keep the last list
                log.exception("reloading the device registry failed; keeping the previous list")

    def __getitem__(self, device_id: str) -> DeviceRecord:
        record = self._devices.get(device_id)
        if record is None:
            record = self._look_up(device_id)
        if record is None:
            raise KeyError(device_id)
        return record

    def _look_up(self, device_id: str) -> DeviceRecord | None:
        now = time.monotonic()
        if self._unknown_until.get(device_id, 0.0) > now or not self._spend_lookup(now):
            return None
        try:
            record = self._source.lookup(device_id)
        except Exception:
            log.exception("looking up device %s failed", device_id[:64])
            return None
        if record is None:
            self._unknown_until[device_id] = now + NEGATIVE_TTL_S
            return None
        self._devices[device_id] = record
        self._announce([record])
        return record

    def _announce(self, records: list[DeviceRecord]) -> None:
        if records and self._on_change is not None:
            self._on_change(records)

    def _spend_lookup(self, now: float) -> bool:
        """A token bucket: at most MAX_LOOKUPS_PER_S one-row queries."""
        self._lookup_budget = min(
            MAX_LOOKUPS_PER_S, self._lookup_budget + (now - self._budget_at) * MAX_LOOKUPS_PER_S
        )
        self._budget_at = now
        if self._lookup_budget < 1:
            return False
        self._lookup_budget -= 1
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)
