"""The ingestor's Prometheus metrics, on a registry of its own (tests run several per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    """Counters and gauges of one ingestor."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "gridwatch_ingest_received", "MQTT messages received", ["kind"], registry=r
        )
        self.written = Counter(
            "gridwatch_ingest_written", "points accepted by InfluxDB", ["kind"], registry=r
        )
        self.rejected = Counter(
            "gridwatch_ingest_rejected", "messages rejected", ["reason", "kind"], registry=r
        )
        self.ignored = Counter(
            "gridwatch_ingest_ignored", "messages not for storage", ["channel"], registry=r
        )
        self.write_retries = Counter(
            "gridwatch_ingest_write_retries", "InfluxDB writes retried", registry=r
        )
        self.batch_size = Histogram(
            "gridwatch_ingest_batch_points",
            "points per InfluxDB write",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000),
            registry=r,
        )
        self.write_seconds = Histogram(
            "gridwatch_ingest_write_seconds", "InfluxDB write latency", registry=r
        )
        self.backlog = Gauge(
            "gridwatch_ingest_backlog", "messages held in memory, not yet acknowledged", registry=r
        )
        self.oldest_unacked = Gauge(
            "gridwatch_ingest_oldest_unacked_seconds",
            "age of the oldest message received but not yet acknowledged",
            registry=r,
        )
        self.influx_up = Gauge(
            "gridwatch_ingest_influx_up", "1 if the last write succeeded", registry=r
        )
        self.broker_up = Gauge(
            "gridwatch_ingest_broker_up", "1 while connected to the broker", registry=r
        )

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 if never set): for tests and the progress line."""
        return self.registry.get_sample_value(name, labels) or 0.0
