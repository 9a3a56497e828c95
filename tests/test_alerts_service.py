"""The alerts service on real Mosquitto and influxd: MQTT in, webhooks, control room, InfluxDB."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from alerts.engine import Engine
from alerts.main import run_alerts
from alerts.models import Alert, AlertNotification, AlertRuleState
from alerts.service import AlertsConfig, AlertService, Watermark
from alerts.sql import Database
from alerts.store import AlertStore
from broker.address import BrokerAddress
from gridwatch.clock import WallClock
from gridwatch.settings import Settings
from influx.client import InfluxClient
from ingest.decode import Outcome
from registry.db import make_engine, make_sessionmaker, migrate
from stack.servers import Mosquitto, free_port
from tests.alerts_cases.harness import StandIn, import_community

pytestmark = pytest.mark.integration

DOOR_READING = {"locked": True, "open": False, "rssi_dbm": -61, "temp_c": 9.0}


def wait_for(condition: Callable[[], Any], timeout: float = 20) -> Any:
    """Poll until ``condition()`` is truthy; return it."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def _whole_points(series: list[Any]) -> list[Any]:
    """``series`` once InfluxDB shows every field of its points, else nothing.

    influxd stores a point's fields one by one in its cache, so a query while a
    write lands may see some of them.
    """
    complete = series and all(None not in r.values() for s in series for r in s.records())
    return series if complete else []


class Site:
    """A community of the test's own on the shared broker, its database and its stand-in."""

    def __init__(self, tmp_path: Path, stand_in: StandIn, mosquitto: Mosquitto) -> None:
        self.id = f"svc{uuid.uuid4().hex[:8]}"
        self.stand_in = stand_in
        url = f"sqlite:///{tmp_path / 'alerts.db'}"
        self.url = url
        migrate(url)
        self.database = Database(make_sessionmaker(make_engine(url)))
        import_community(
            self.database.sessions, stand_in, {"door.held_open": {"after_s": 3}}, self.id
        )
        self.broker = BrokerAddress.from_url(mosquitto.url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.control_room: list[dict[str, Any]] = []
        self.client.on_message = lambda c, u, m: self.control_room.append(json.loads(m.payload))
        self.client.connect(self.broker.host, self.broker.port)
        self.client.subscribe(f"sc/{self.id}/alerts", qos=1)
        self.client.loop_start()

    def service(
        self, influx: InfluxClient | None, database: Database | None = None
    ) -> AlertService:
        """A started alerts service with the site's own persistent session."""
        config = AlertsConfig(
            broker=self.broker, client_id=f"alerts-{self.id}", flush_ms=20, idle_ms=2_000
        )
        service = AlertService(config, database or self.database, influx)
        service.start()
        assert service.subscribed.wait(10)
        return service

    def publish(self, device: str, channel: str, seq: int, **payload: Any) -> int:
        """Publish as the device, now; returns the ts."""
        ts = WallClock().now_ms()
        body = {"ts": ts, "seq": seq, **payload}
        kind = device.split("-")[0]
        topic = f"sc/{self.id}/{ {'lamp': 'streetlight', 'wm': 'water_meter'}.get(kind, kind) }"
        self.client.publish(f"{topic}/{self.id}-{device}/{channel}", json.dumps(body), qos=1)
        return ts

    def alerts(self) -> list[Alert]:
        """Every alert, oldest first."""
        with self.database.read() as session:
            return list(session.scalars(select(Alert).order_by(Alert.id)))

    def state(self, rule: str, key: str) -> AlertRuleState | None:
        """A persisted rule state, read afresh."""
        with self.database.read() as session:
            return session.get(AlertRuleState, (rule, key))

    def close(self) -> None:
        """Disconnect the test's client."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def site(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Site]:
    """A fresh site with its HTTP stand-in."""
    with StandIn() as stand_in:
        site = Site(tmp_path, stand_in, mosquitto)
        yield site
        site.close()


def test_the_watermark_is_what_every_connection_had_delivered_a_while_ago() -> None:
    watermark = Watermark(lag_s=30)
    assert watermark.note(100.0, 1_000) == 0  # not 30 s of history yet
    assert watermark.note(110.0, 5_000) == 0
    assert watermark.note(131.0, 9_000) == 1_000  # the newest as of 101 s: from 100 s
    assert watermark.note(145.0, 9_500) == 5_000  # as of 115 s: from 110 s


def test_a_forced_door_reaches_every_channel_and_influxdb(
    site: Site, influx_db: InfluxClient
) -> None:
    service = site.service(influx_db)
    try:
        site.publish("door-b03-u2", "telemetry", 1, **DOOR_READING)
        forced_at = site.publish("door-b03-u2", "event", 2, event="forced_open")
        paths = {"/dingtalk/g1", "/webhook/g1", "/wecom/g1", "/sms"}
        wait_for(lambda: {r.path for r in site.stand_in.requests} == paths)
        (opened,) = wait_for(lambda: site.control_room)
        rows = wait_for(lambda: _whole_points(influx_db.query('SELECT * FROM "alert_event"')))
    finally:
        service.stop()
    assert all(not r.problem for r in site.stand_in.requests)
    assert (opened["rule"], opened["transition"], opened["at_ms"]) == (
        "door.forced",
        "opened",
        forced_at,
    )
    (point,) = rows[0].records()
    assert point == {
        "time": forced_at,
        "alert_id": "1",
        "community": site.id,
        "device_id": f"{site.id}-door-b03-u2",
        "kind": "door",
        "open": 1,
        "place": "张家新村 3号楼2单元",
        "rule": "door.forced",
        "severity": "critical",
        "subject": f"{site.id}-door-b03-u2",
        "title": "单元门被强行打开",
        "transition": "opened",
    }
    tags = {row[0] for s in influx_db.query('SHOW TAG KEYS FROM "alert_event"') for row in s.values}
    assert tags == {"community", "rule", "severity", "kind", "transition"}
    fields = {
        row[0]: row[1]
        for s in influx_db.query('SHOW FIELD KEYS FROM "alert_event"')
        for row in s.values
    }
    assert fields == {
        "alert_id": "string",
        "device_id": "string",
        "subject": "string",
        "place": "string",
        "title": "string",
        "open": "integer",
    }


def test_a_restart_in_an_absence_window_fires_on_time_and_repeats_nothing(site: Site) -> None:
    first = site.service(None)
    opened_at = site.publish("door-b08-u1", "event", 1, event="open")
    wait_for(lambda: site.state("door.held_open", f"{site.id}-door-b08-u1"))
    first.stop()
    # While the service is down the door reports again; the broker keeps it for the session.
    site.publish("door-b08-u1", "telemetry", 2, **{**DOOR_READING, "locked": False, "open": True})
    time.sleep(3.5)
    second = site.service(None)
    try:
        (alert,) = wait_for(site.alerts)
        wait_for(lambda: len(site.stand_in.requests) == 1)
        time.sleep(1.0)  # room for a duplicate, were there one
    finally:
        second.stop()
    assert (alert.rule, alert.opened_ms, alert.since_ms) == (
        "door.held_open",
        opened_at + 3000,
        opened_at,
    )
    assert [r.path for r in site.stand_in.requests] == ["/wecom/g2"]
    assert [(e["rule"], e["transition"]) for e in site.control_room] == [
        ("door.held_open", "opened")
    ]


def test_a_failed_commit_is_not_acknowledged_and_the_message_comes_back(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_apply = AlertStore.apply
    failures = [OperationalError("INSERT", {}, ConnectionResetError("database went away"))]

    def flaky_apply(self: AlertStore, session: Any, findings: Any) -> Counter[str]:
        if findings and failures:
            raise failures.pop()
        return real_apply(self, session, findings)

    monkeypatch.setattr(AlertStore, "apply", flaky_apply)
    service = site.service(None)
    try:
        site.publish("wm-b03-u2-501", "event", 1, event="tamper")
        (alert,) = wait_for(site.alerts)
        wait_for(lambda: len(site.stand_in.requests) == 4)
    finally:
        service.stop()
    assert not failures  # it did fail once
    assert alert.rule == "water.tamper" and alert.occurrences == 1
    with site.database.read() as session:
        channels = sorted(n.channel for n in session.scalars(select(AlertNotification)))
    assert channels == ["dingtalk", "mqtt", "sms", "webhook", "wecom"]


def test_a_message_the_rules_fail_on_is_dropped_and_the_others_go_on(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rule's bug that one message triggers: the broker would send it again after
    # every failed batch, and no alert behind it would ever open.
    real_handle = Engine.handle
    tries: list[bytes] = []

    def buggy_handle(self: Engine, topic: str, payload: bytes, received_ms: int) -> Outcome:
        if b"poison" in payload:
            tries.append(payload)
            raise ZeroDivisionError("a rule's bug")
        return real_handle(self, topic, payload, received_ms)

    monkeypatch.setattr(Engine, "handle", buggy_handle)
    service = site.service(None)
    try:
        site.publish("wm-b03-u2-501", "event", 1, event="tamper", poison=True)
        site.publish("wm-b01-u1-101", "event", 1, event="tamper")
        (alert,) = wait_for(site.alerts)
        assert alert.subject.endswith("wm-b01-u1-101")
        time.sleep(1.0)  # it does not come back
        site.publish("door-b08-u1", "event", 1, event="forced_open")
        wait_for(lambda: len(site.alerts()) == 2)
    finally:
        service.stop()
    assert len(tries) == 2  # in the batch, then alone
    assert site.alerts()[1].rule == "door.forced"
    assert service.metrics.value("gridwatch_alerts_messages_total", outcome="poison") == 1
    assert service.metrics.value("gridwatch_alerts_rule_failures_total", during="message") == 1
    assert service.metrics.value("gridwatch_alerts_rule_failures_total", during="batch") == 1


def test_a_rule_failing_as_time_moves_drops_no_message(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_advance = Engine.advance
    # Twice: in the batch, then again when time moves after the message alone.
    failures = [ZeroDivisionError("a timer rule's bug") for _ in range(2)]

    def buggy_advance(self: Engine, now_ms: int | None = None) -> None:
        if failures and self.newest_ms:  # once the message is in
            raise failures.pop()
        real_advance(self, now_ms)

    monkeypatch.setattr(Engine, "advance", buggy_advance)
    service = site.service(None)
    try:
        site.publish("wm-b03-u2-501", "event", 1, event="tamper")
        (alert,) = wait_for(site.alerts)
    finally:
        service.stop()
    assert not failures and alert.rule == "water.tamper"
    failed = service.metrics.value
    assert failed("gridwatch_alerts_rule_failures_total", during="batch") == 1
    assert failed("gridwatch_alerts_rule_failures_total", during="time") == 1
    assert failed("gridwatch_alerts_rule_failures_total", during="message") == 0
    assert failed("gridwatch_alerts_messages_total", outcome="poison") == 0


class Outage(Database):
    """The site's database as the service sees it: unreachable while ``down`` is set.

    Raises what SQLAlchemy raises when PostgreSQL refuses a connection, on the first
    use of a session, so every thread of the service (processor, senders, exporter)
    meets it where it would.
    """

    def __init__(self, database: Database) -> None:
        super().__init__(database.sessions)
        self.down = threading.Event()

    def _refuse(self) -> None:
        if self.down.is_set():
            refused = ConnectionRefusedError("connection refused")
            raise OperationalError("SELECT 1", {}, refused)

    def read(self) -> Session:
        """A session, or OperationalError while down."""
        self._refuse()
        return super().read()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction, or OperationalError while down."""
        self._refuse()
        with super().write() as session:
            yield session


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a /metrics endpoint by (name, sorted labels)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_metrics_endpoint_shows_broker_sql_and_the_work_done(
    site: Site, tmp_path: Path, mosquitto: Mosquitto, influx_db: InfluxClient
) -> None:
    port = free_port()
    settings = Settings(  # the others from their defaults
        state_dir=tmp_path,
        mqtt_url=mosquitto.url,
        database_url=site.url,
        influx_url=influx_db.url,
        influx_db=influx_db.database,
        alerts_client_id=f"alerts-{site.id}",
        alerts_metrics_port=port,
    )
    stop = threading.Event()
    # run_alerts as `gridwatch alerts` runs it: the endpoint comes from the settings.
    runner = threading.Thread(target=run_alerts, args=(settings, stop), daemon=True)
    runner.start()
    try:

        def sample(name: str, **labels: str) -> float:
            try:
                samples = scrape(port)
            except httpx.HTTPError:
                return -1.0  # not serving yet
            return samples.get((name, tuple(sorted(labels.items()))), 0.0)

        wait_for(lambda: sample("gridwatch_alerts_broker_up") == 1)
        # The subscription follows the connection: a reading is published until one counts.
        seq = 0

        def reading_counted() -> bool:
            nonlocal seq
            seq += 1
            site.publish("door-b03-u2", "telemetry", seq, **DOOR_READING)
            time.sleep(0.3)
            return sample("gridwatch_alerts_messages_total", outcome="accepted") >= 1

        wait_for(reading_counted)
        door = f"sc/{site.id}/door/{site.id}-door-b03-u2"
        site.client.publish(f"{door}/telemetry", b"not json", qos=1)
        site.publish("door-b03-u2", "event", seq + 1, event="forced_open")
        paths = {"/dingtalk/g1", "/webhook/g1", "/wecom/g1", "/sms"}
        wait_for(lambda: {r.path for r in site.stand_in.requests} == paths)
        channels = ("dingtalk", "webhook", "wecom", "sms", "mqtt")
        wait_for(
            lambda: all(
                sample("gridwatch_alerts_notifications_total", channel=c, outcome="sent") == 1
                for c in channels
            )
        )
        samples = scrape(port)
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive(), "run_alerts returns once stopped"

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("gridwatch_alerts_broker_up") == 1
    assert value("gridwatch_alerts_sql_up") == 1
    assert value("gridwatch_alerts_messages_total", outcome="accepted") >= 2  # readings, event
    assert value("gridwatch_alerts_messages_total", outcome="rejected") == 1  # not json
    assert value("gridwatch_alerts_findings_total", rule="door.forced", change="raised") == 1
    assert value("gridwatch_alerts_transitions_total", transition="opened") == 1
    assert value("gridwatch_alerts_transitions_total", transition="resolved") == 0
    assert value("gridwatch_alerts_outbox_pending") == 0
    failed = [k for k in samples if k[0] == "gridwatch_alerts_notifications_total"]
    assert all(dict(labels)["outcome"] == "sent" for _, labels in failed), failed
    with pytest.raises(httpx.ConnectError):  # the endpoint stops with the service
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_an_sql_outage_shows_as_sql_up_0_and_its_messages_come_back_after_it(
    site: Site,
) -> None:
    outage = Outage(site.database)
    service = site.service(None, outage)
    try:
        assert service.metrics.value("gridwatch_alerts_sql_up") == 1
        outage.down.set()
        wait_for(lambda: service.metrics.value("gridwatch_alerts_sql_up") == 0, timeout=10)
        site.publish("wm-b03-u2-501", "event", 1, event="tamper")
        time.sleep(2.0)  # long enough for the message to arrive and fail to be stored
        assert service.metrics.value("gridwatch_alerts_broker_up") == 1, "only SQL is down"
        assert service.metrics.value("gridwatch_alerts_sql_up") == 0
        assert site.alerts() == []
        outage.down.clear()
        # Restored from SQL, reconnected: the broker sends the message again.
        (alert,) = wait_for(site.alerts)
        wait_for(lambda: len(site.stand_in.requests) == 4)
        assert service.metrics.value("gridwatch_alerts_sql_up") == 1
    finally:
        service.stop()
    assert alert.rule == "water.tamper" and alert.occurrences == 1
    assert service.metrics.value("gridwatch_alerts_transitions_total", transition="opened") == 1
