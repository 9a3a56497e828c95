"""The imagery service's Prometheus metrics, on a registry of its own (tests run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ImageryMetrics:
    """Counters and gauges of one imagery service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "gridwatch_imagery_received", "MQTT messages received", ["channel"], registry=r
        )
        self.stored = Counter("gridwatch_imagery_stored", "snapshots stored", registry=r)
        self.rejected = Counter(
            "gridwatch_imagery_rejected", "snapshots refused", ["reason"], registry=r
        )
        self.flagged = Counter(
            "gridwatch_imagery_flagged",
            "snapshots flagged by the quality checks",
            ["flag"],
            registry=r,
        )
        self.blurred = Counter("gridwatch_imagery_blurred", "regions blurred", ["kind"], registry=r)
        self.checkpoints = Counter(
            "gridwatch_imagery_checkpoints",
            "checkpoint QR codes read, by outcome (published, foreign, unreadable)",
            ["outcome"],
            registry=r,
        )
        self.camera_events = Counter(
            "gridwatch_imagery_camera_events",
            "camera_fault / camera_ok published",
            ["event"],
            registry=r,
        )
        self.expired = Counter(
            "gridwatch_imagery_expired", "snapshots deleted by retention", registry=r
        )
        self.process_seconds = Histogram(
            "gridwatch_imagery_process_seconds",
            "time to check, blur and store one snapshot",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=r,
        )
        self.backlog = Gauge(
            "gridwatch_imagery_backlog", "messages received, not yet acknowledged", registry=r
        )
        self.broker_up = Gauge(
            "gridwatch_imagery_broker_up", "1 while connected to the broker", registry=r
        )

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 if never set): for tests."""
        return self.registry.get_sample_value(name, labels) or 0.0
