"""The alerts service's Prometheus metrics, on a registry of its own (tests run several).

``broker_up`` and ``sql_up`` are what compose's health check reads: the service is
useless without either, since alerts it cannot store are lost to the people on duty.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AlertsMetrics:
    """Counters and gauges of one alerts service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "gridwatch_alerts_messages",
            "MQTT messages committed, by outcome (accepted, rejected, ignored, camera, poison)",
            ["outcome"],
            registry=r,
        )
        self.findings = Counter(
            "gridwatch_alerts_findings",
            "rule findings committed, by rule and change (raised, cleared)",
            ["rule", "change"],
            registry=r,
        )
        self.transitions = Counter(
            "gridwatch_alerts_transitions",
            "alert transitions made by this service (opened, resolved, escalated); "
            "people's acknowledgements and resolutions go through the API",
            ["transition"],
            registry=r,
        )
        self.notifications = Counter(
            "gridwatch_alerts_notifications",
            "notification attempts recorded, by channel and outcome (sent, retried, failed)",
            ["channel", "outcome"],
            registry=r,
        )
        self.rule_failures = Counter(
            "gridwatch_alerts_rule_failures",
            "a rule failed (a bug, not SQL): on a batch (then run a message at a time), "
            "a message alone (dropped: outcome poison) or as time moved (it moves next round)",
            ["during"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "gridwatch_alerts_outbox_pending",
            "notifications owed and not yet sent or given up on",
            registry=r,
        )
        self.broker_up = Gauge(
            "gridwatch_alerts_broker_up", "1 while connected to the broker", registry=r
        )
        self.sql_up = Gauge(
            "gridwatch_alerts_sql_up",
            "1 if the service's last SQL transaction succeeded (alerts can be stored)",
            registry=r,
        )

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 if never set): for tests."""
        return self.registry.get_sample_value(name, labels) or 0.0
