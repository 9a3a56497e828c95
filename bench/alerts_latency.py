"""Alert latency: a device's publish to the webhook receiving the alert, under load and in a burst.

One ``gridwatch alerts`` process runs against the private Mosquitto and a fresh
SQLite registry holding the demo community, its notification URLs pointed at a
local HTTP receiver (answering as WeCom, DingTalk, the webhook and the SMS
gateway would). Meanwhile a publisher replays the demo community's normal
traffic at ``LOAD_FACTOR`` times its real rate, with ``ts`` = now.

- steady: a door is forced open every 250 ms, each at another door;
- burst: every door of the community reports ``tamper`` at once (112 alerts,
  ~450 notifications).

Latency of one alert = the first notification of it received (its place is in
every message) − the moment just before the device's message was published.

    python bench/alerts_latency.py
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench.alerts_throughput import demo_database, demo_day
from bench.common import Stack, private_stack
from broker.address import BrokerAddress
from registry.db import make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_document
from registry.records import load_devices

LOAD_FACTOR = 10  # the demo's ~5 msg/s, ten times over
STEADY_PROBES = 60
STEADY_GAP_S = 0.25
FORCED = "单元门被强行打开"
TAMPERED = "门禁设备被撬动或破坏"
_OPENING = re.compile(r"【(?:紧急|重要|一般)】([^（。\n]+).*?地点[*]*：(张家新村 [^。\n*]+)", re.S)


def _opening_key(words: str) -> str | None:
    """``place|title`` of an opening message (not an escalation or a resolution), else None."""
    found = _OPENING.search(words)
    return f"{found.group(2)}|{found.group(1)}" if found else None


class Receiver:
    """The stand-in for every notification endpoint: notes when each alert's first message came."""

    def __init__(self) -> None:
        self.first_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.note(body, time.time())
                reply = b'{"errcode":0,"errmsg":"ok"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def note(self, body: bytes, at: float) -> None:
        """Remember when the first message opening an alert (place and title) arrived."""
        try:
            data = json.loads(body)
        except ValueError:
            return
        if "transition" in data:  # the webhook: the event itself
            key = f"{data['place']}|{data['title']}" if data["transition"] == "opened" else None
        else:  # WeCom, DingTalk (Markdown), SMS (text)
            markdown = data.get("markdown") or {}
            key = _opening_key(
                str(data.get("text") or markdown.get("content") or markdown.get("text"))
            )
        if key is not None:
            with self._lock:
                self.first_seen.setdefault(key, at)

    def close(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._server.server_close()


def _registry(stack: Stack, receiver: Receiver, name: str) -> str:
    """A fresh SQLite registry: the demo community, its notifications sent to the receiver."""
    url = f"sqlite:///{stack.root / f'{name}.db'}"
    migrate(url)
    raw = DEMO_COMMUNITY_FILE.read_text(encoding="utf-8").replace(
        "http://127.0.0.1:9", receiver.url
    )
    with make_sessionmaker(make_engine(url)).begin() as session:
        import_document(session, yaml.safe_load(raw))
    return url


@contextmanager
def alerts_service(stack: Stack, sql_url: str, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """``gridwatch alerts`` on the private broker and this registry."""
    env = {
        **os.environ,
        "GW_STATE_DIR": str(stack.root / name),
        "GW_MQTT_URL": stack.mosquitto.url,
        "GW_INFLUX_URL": stack.influxd.url,
        "GW_INFLUX_DB": name,
        "GW_DATABASE_URL": sql_url,
        "GW_ALERTS_CLIENT_ID": f"bench-{name}",
        # Off, as for ingest's bench: a `make run` on this machine holds the default port.
        "GW_ALERTS_METRICS_PORT": "0",
    }
    log = (stack.root / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gridwatch.cli", "alerts"], env=env, stdout=log, stderr=log
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)
        log.close()


class Publisher:
    """One MQTT connection publishing as the devices (QoS 1), with ``ts`` = now."""

    def __init__(self, stack: Stack) -> None:
        address = BrokerAddress.from_url(stack.mosquitto.url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.max_inflight_messages_set(1000)
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        self._seq = 10_000_000

    def send(self, topic: str, body: dict[str, Any]) -> float:
        """Publish now; returns the wall time just before."""
        self._seq += 1
        at = time.time()
        payload = {**body, "ts": int(at * 1000)}
        if "seq" in body:
            payload["seq"] = self._seq
        self.client.publish(topic, json.dumps(payload), qos=1)
        return at

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def _background(
    publisher: Publisher, messages: list[tuple[str, bytes, int]], stop: threading.Event
) -> None:
    """Replay the demo day's traffic at LOAD_FACTOR × its real pace, ts rewritten to now."""
    first_ms = messages[0][2]
    started = time.monotonic()
    for topic, payload, received_ms in messages:
        due = started + (received_ms - first_ms) / 1000 / LOAD_FACTOR
        if stop.wait(max(0.0, due - time.monotonic())):
            return
        body = json.loads(payload)
        if topic.endswith("/status") or "forced_open" in body.values() or "tamper" in body.values():
            continue
        publisher.send(topic, body)


def _wait_for(places: list[str], receiver: Receiver, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(p in receiver.first_seen for p in places):
        time.sleep(0.02)


def _latencies(sent: dict[str, float], receiver: Receiver) -> list[float]:
    missing = [place for place in sent if place not in receiver.first_seen]
    if missing:
        raise RuntimeError(f"{len(missing)} alerts never arrived, e.g. {missing[:3]}")
    return [(receiver.first_seen[p] - t) * 1000 for p, t in sent.items()]


def measure(
    stack: Stack, name: str, day: list[tuple[str, bytes, int]]
) -> tuple[list[float], list[float]]:
    """(steady latencies, burst latencies) in ms, for one fresh service."""
    receiver = Receiver()
    sql_url = _registry(stack, receiver, name)
    with make_sessionmaker(make_engine(sql_url))() as session:
        doors = [d for d in load_devices(session, "zjxc") if d.kind == "door"]
    publisher = Publisher(stack)
    stop = threading.Event()
    try:
        with alerts_service(stack, sql_url, name):
            warm = doors[-1]
            publisher.send(
                f"sc/zjxc/door/{warm.device_id}/event", {"seq": 0, "event": "forced_open"}
            )
            _wait_for([f"张家新村 {warm.place}|{FORCED}"], receiver, 60)
            load = threading.Thread(target=_background, args=(publisher, day, stop), daemon=True)
            load.start()
            steady: dict[str, float] = {}
            for door in doors[:STEADY_PROBES]:
                topic = f"sc/zjxc/door/{door.device_id}/event"
                key = f"张家新村 {door.place}|{FORCED}"
                steady[key] = publisher.send(topic, {"seq": 0, "event": "forced_open"})
                time.sleep(STEADY_GAP_S)
            _wait_for(list(steady), receiver, 30)
            burst = {
                f"张家新村 {d.place}|{TAMPERED}": publisher.send(
                    f"sc/zjxc/door/{d.device_id}/event", {"seq": 0, "event": "tamper"}
                )
                for d in doors
            }
            _wait_for(list(burst), receiver, 60)
            stop.set()
    finally:
        stop.set()
        publisher.close()
        receiver.close()
    return _latencies(steady, receiver), _latencies(burst, receiver)


def percentile(values: list[float], pct: float) -> float:
    """The ``pct``-th percentile (nearest rank)."""
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, round(pct / 100 * len(ranked)) - 1))]


if __name__ == "__main__":
    traffic = demo_day(demo_database())
    with private_stack() as stack:
        steady, burst = measure(stack, "alertslatency", traffic)
    print(f"steady p50 {statistics.median(steady):.0f} ms, p99 {percentile(steady, 99):.0f} ms")
    print(f"burst  p50 {statistics.median(burst):.0f} ms, p99 {percentile(burst, 99):.0f} ms")
