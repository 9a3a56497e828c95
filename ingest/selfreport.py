"""Ingest's report of itself into InfluxDB, so Grafana (which reads only InfluxDB) can show it.

Every ``interval_s``: ``ingest_stats`` (tag ``instance``; counts during the
interval, the backlog now, write latency, broker/InfluxDB up) and
``ingest_rejected`` (tags ``instance``, ``reason``, ``kind``; ``count``). And
``device_info`` (the device's tags; ``lat``, ``lon``, ``place``) for devices
that are new or changed in the registry, which the dashboards' maps need
because positions live in the registry. See dashboards/README.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from devices.contract import DeviceRecord
from devices.points import device_tags
from influx.client import InfluxClient, InfluxError
from influx.lineprotocol import FieldValue, Point, encode_batch
from ingest.metrics import IngestMetrics

log = logging.getLogger("gridwatch.ingest")

STATS_MEASUREMENT = "ingest_stats"
REJECTED_MEASUREMENT = "ingest_rejected"
DEVICE_INFO_MEASUREMENT = "device_info"
DEVICE_INFO_CHUNK = 5000
COUNTERS = {
    "received": "gridwatch_ingest_received_total",
    "written": "gridwatch_ingest_written_total",
    "rejected": "gridwatch_ingest_rejected_total",
    "ignored": "gridwatch_ingest_ignored_total",
    "write_retries": "gridwatch_ingest_write_retries_total",
    "writes": "gridwatch_ingest_write_seconds_count",
    "write_seconds": "gridwatch_ingest_write_seconds_sum",
}


def device_info_point(record: DeviceRecord, time_ms: int) -> Point | None:
    """Where a device is, as the maps need it (None for a device without a position)."""
    if record.lat is None or record.lon is None:
        return None
    fields: dict[str, FieldValue] = {"lat": record.lat, "lon": record.lon, "place": record.place}
    return Point(DEVICE_INFO_MEASUREMENT, device_tags(record, with_kind=True), fields, time_ms)


@dataclass
class _Totals:
    counters: dict[str, float] = field(default_factory=dict)
    rejected: dict[tuple[str, str], float] = field(default_factory=dict)


class SelfReport:
    """A thread that writes ingest's statistics and changed device positions."""

    def __init__(
        self,
        metrics: IngestMetrics,
        influx: InfluxClient,
        instance: str,
        now_ms: Callable[[], int],
        interval_s: float = 10.0,
    ) -> None:
        self._metrics = metrics
        self._influx = influx
        self._instance = instance
        self._now_ms = now_ms
        self._interval_s = interval_s
        self._last = self._totals()
        self._unreported: dict[str, DeviceRecord] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ingest-report", daemon=True)
        self.write_ms_max = 0.0

    def devices_changed(self, records: Iterable[DeviceRecord]) -> None:
        """Queue new or changed devices for a ``device_info`` point."""
        with self._lock:
            self._unreported.update((r.device_id, r) for r in records)

    def start(self) -> None:
        """Report every interval until stopped."""
        self._thread.start()

    def stop(self) -> None:
        """Stop reporting."""
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.report()
            except (
                InfluxError
            ) as exc:  # no self-report while InfluxDB is away; /metrics still works
                log.debug("self-report not written: %s", exc)

    def _totals(self) -> _Totals:
        totals = _Totals()
        wanted = {name: key for key, name in COUNTERS.items()}
        for family in self._metrics.registry.collect():
            for sample in family.samples:
                key = wanted.get(sample.name)
                if key is not None:
                    totals.counters[key] = totals.counters.get(key, 0.0) + sample.value
                if sample.name == "gridwatch_ingest_rejected_total":
                    pair = (sample.labels["reason"], sample.labels["kind"])
                    totals.rejected[pair] = sample.value
        return totals

    def report(self) -> None:
        """Write one interval's statistics and any changed device positions."""
        now = self._now_ms()
        totals = self._totals()
        delta = {k: v - self._last.counters.get(k, 0.0) for k, v in totals.counters.items()}
        points = [self._stats_point(delta, now)]
        for (reason, kind), value in totals.rejected.items():
            count = int(value - self._last.rejected.get((reason, kind), 0.0))
            if count:
                tags = {"instance": self._instance, "reason": reason, "kind": kind}
                points.append(Point(REJECTED_MEASUREMENT, tags, {"count": count}, now))
        self._influx.write(encode_batch(points))
        self._last = totals
        self.write_ms_max = 0.0
        self._report_devices(now)

    def _stats_point(self, delta: dict[str, float], now: int) -> Point:
        fields: dict[str, FieldValue] = {
            key: int(delta.get(key, 0)) for key in COUNTERS if key != "write_seconds"
        }
        fields["backlog"] = int(self._metrics.value("gridwatch_ingest_backlog"))
        fields["interval_s"] = float(self._interval_s)
        fields["broker_up"] = self._metrics.value("gridwatch_ingest_broker_up") == 1
        fields["influx_up"] = self._metrics.value("gridwatch_ingest_influx_up") == 1
        if delta.get("writes"):
            fields["write_ms_mean"] = 1000 * delta["write_seconds"] / delta["writes"]
            fields["write_ms_max"] = self.write_ms_max
        return Point(STATS_MEASUREMENT, {"instance": self._instance}, fields, now)

    def _report_devices(self, now: int) -> None:
        with self._lock:
            pending, self._unreported = self._unreported, {}
        records = list(pending.values())
        try:
            for start in range(0, len(records), DEVICE_INFO_CHUNK):
                chunk = records[start : start + DEVICE_INFO_CHUNK]
                points = [p for p in (device_info_point(r, now) for r in chunk) if p is not None]
                if points:
                    self._influx.write(encode_batch(points))
        except InfluxError:
            self.devices_changed(records)  # try again next interval
            raise
