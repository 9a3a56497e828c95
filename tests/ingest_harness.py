"""Drive ingest (a real ``gridwatch ingest`` process, or an in-process ``Ingestor``) and
a paced QoS 1 publisher, then count exactly what it stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from broker.address import BrokerAddress
from devices import KINDS
from devices.contract import Channel
from influx.client import InfluxClient, quote_literal
from ingest.metrics import IngestMetrics
from stack.servers import free_port

DOORS = [f"zjxc-door-b0{b}-u{u}" for b in range(1, 4) for u in (1, 2)]


def door_payload(seq: int, ts: int) -> bytes:
    """A valid door heartbeat."""
    body = {"ts": ts, "seq": seq, "locked": True, "open": False, "rssi_dbm": -60, "temp_c": 20.5}
    return json.dumps(body).encode()


class IngestProcess:
    """``gridwatch ingest`` as a child process, killable and restartable."""

    def __init__(
        self, mqtt_url: str, influx: InfluxClient, sql_url: str, log: Path, **env: str
    ) -> None:
        self.metrics_port = free_port()
        self.log = log
        self.env = {
            **os.environ,
            "GW_MQTT_URL": mqtt_url,
            "GW_INFLUX_URL": influx.url,
            "GW_INFLUX_DB": influx.database,
            "GW_DATABASE_URL": sql_url,
            "GW_INGEST_METRICS_PORT": str(self.metrics_port),
            "GW_INGEST_FLUSH_MS": "100",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until it is subscribed."""
        before = self._connects()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gridwatch.cli", "ingest", "-v"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while self._connects() == before:
            assert time.monotonic() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.05)
        time.sleep(0.3)  # the SUBACK follows the CONNACK

    def _connects(self) -> int:
        return (
            self.log.read_text(errors="replace").count("connected to broker")
            if self.log.exists()
            else 0
        )

    def kill(self) -> None:
        """SIGKILL: no flush, no clean disconnect."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def written(self) -> float:
        """Points this process (since its last start) wrote, from its /metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "gridwatch_ingest_written_total"
        )

    def rss_kib(self) -> int:
        """Resident memory now."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


class Publisher:
    """A device-side publisher with a persistent session: QoS 1 survives broker restarts."""

    def __init__(self, mqtt_url: str, client_id: str = "fault-test-publisher") -> None:
        address = BrokerAddress.from_url(mqtt_url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.max_inflight_messages_set(200)
        # paho annotates whole seconds but only sleeps for it: 0.2 s keeps the fault tests fast.
        self.client.reconnect_delay_set(0.2, 2)  # type: ignore[arg-type]
        self.client.on_publish = self._acknowledged
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        self.published = 0
        self.acknowledged = 0
        self.sent: dict[str, list[int]] = {}

    def _acknowledged(self, *_: object) -> None:
        self.acknowledged += 1

    def publish_stream(
        self,
        total: int,
        rate: float,
        make: Callable[[int], tuple[str, bytes] | None] | None = None,
        at: dict[int, Callable[[], None]] | None = None,
    ) -> None:
        """Publish ``total`` messages at ``rate``/s; ``at[i]`` runs before message i."""
        base = int(time.time() * 1000) - 3_600_000
        started = time.monotonic()
        for i in range(total):
            if at and i in at:
                at[i]()
            topic_payload = make(i) if make else None
            if topic_payload is None:
                device = DOORS[i % len(DOORS)]
                seq = i // len(DOORS) + 1
                self.sent.setdefault(device, []).append(seq)
                topic_payload = (f"sc/zjxc/door/{device}/telemetry", door_payload(seq, base + i))
            # While the broker is away paho keeps QoS 1 messages and sends them on reconnect.
            self.client.publish(*topic_payload, qos=1)
            self.published += 1
            delay = started + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def wait_delivered(self, timeout: float = 120) -> None:
        """Until the broker acknowledged every message."""
        deadline = time.monotonic() + timeout
        while self.acknowledged < self.published:
            assert time.monotonic() < deadline, "broker never acknowledged every message"
            time.sleep(0.1)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def stored_seqs(influx: InfluxClient, device: str) -> list[int]:
    """Every ``seq`` stored for a door, in time order (duplicates would show twice)."""
    series = influx.query(f'SELECT "seq" FROM "door" WHERE "device_id" = {quote_literal(device)}')
    return [int(row[1]) for row in series[0].values] if series else []


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def all_stored(influx: InfluxClient, sent: dict[str, list[int]]) -> bool:
    """True once every sent seq of every device is stored."""
    return all(len(stored_seqs(influx, d)) >= len(seqs) for d, seqs in sent.items())


def run_in_background(fn: Callable[[], None]) -> threading.Thread:
    """Start ``fn`` in a thread (the publisher paces itself while the test injures the stack)."""
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def count(influx: InfluxClient, query: str) -> int:
    """The single value of a ``SELECT count(...)`` (0 when nothing matched)."""
    series = influx.query(query)
    return int(series[0].values[0][1]) if series else 0


def stored(influx: InfluxClient, kind: str, channel: Channel) -> int:
    """Points ingest stored for a kind's channel: one per message it accepted.

    A snapshot too leaves one point, of its arrival (measurement ``snapshot``); the image
    itself is the imagery service's to store, not ingest's.
    """
    spec = KINDS[kind]
    match channel:
        case Channel.TELEMETRY:
            return count(influx, f'SELECT count("seq") FROM "{spec.measurement}"')
        case Channel.EVENT:
            return count(influx, f'SELECT count("seq") FROM "{spec.measurement_event}"')
        case Channel.STATUS:
            where = f"kind = {quote_literal(kind)}"
            return count(influx, f'SELECT count("online") FROM device_status WHERE {where}')
        case Channel.CMD_ACK:
            return count(
                influx, f'SELECT count("seq") FROM cmd_ack WHERE kind = {quote_literal(kind)}'
            )
        case Channel.SNAPSHOT:
            return count(
                influx, f'SELECT count("bytes") FROM snapshot WHERE kind = {quote_literal(kind)}'
            )
        case Channel.CMD:
            raise ValueError("devices receive commands; ingest stores none")


def wait_ingested(metrics: IngestMetrics, expected: int, timeout: float = 120) -> None:
    """Until an in-process ingestor has handled ``expected`` messages (stored, rejected
    or ignored) and written everything it holds."""

    def handled() -> bool:
        received = sum(
            metrics.value("gridwatch_ingest_received_total", kind=k) for k in [*KINDS, "unknown"]
        )
        return received >= expected and metrics.value("gridwatch_ingest_backlog") == 0

    wait_until(handled, timeout, f"ingest to handle {expected} messages")
