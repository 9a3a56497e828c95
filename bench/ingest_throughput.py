"""Ingest benchmarks: end-to-end throughput (gridwatch and Node-RED), latency, backlog memory.

Throughput follows ../shared/peers/bench_e2e.py: a consumer process is started
and subscribed; at t0 ``mosquitto_pub -l`` publishes N door telemetry messages
at QoS 1 (65,000-line chunks: mosquitto_pub 2.0.11's -l wraps its message ids),
each a distinct point; InfluxDB is polled every 250 ms until N points are
queryable (t1). rate = N / (t1 - t0). Peak RSS is the consumer's VmHWM.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import Stack
from influx.client import InfluxClient

DEVICE = "zjxc-door-b01-u1"
TOPIC = f"sc/zjxc/door/{DEVICE}/telemetry"
CHUNK = 65_000
BENCH = Path(__file__).resolve().parent
NODE_RED_DIR = BENCH / "out" / "nodered"


@dataclass(frozen=True)
class Consumer:
    """A process that moves MQTT messages into InfluxDB."""

    name: str
    ready_text: str

    def command(self, stack: Stack, database: str) -> tuple[list[str], dict[str, str]]:
        """Its command line and environment."""
        if self.name == "gridwatch":
            env = {
                "GW_MQTT_URL": stack.mosquitto.url,
                "GW_INFLUX_URL": stack.influxd.url,
                "GW_INFLUX_DB": database,
                "GW_DATABASE_URL": stack.sql_url,
                "GW_INGEST_METRICS_PORT": "0",
                "GW_INGEST_CLIENT_ID": f"bench-{database}",
            }
            return [sys.executable, "-m", "gridwatch.cli", "ingest"], env
        env = {
            "NR_FLOWS": str(BENCH / "nodered" / "flow.json"),
            "NR_QOS": "1",
            "NR_DB": database,
            "NR_MQTT_PORT": str(stack.mosquitto.port),
            "NR_INFLUX_PORT": str(stack.influxd.port),
        }
        red = NODE_RED_DIR / "node_modules" / "node-red" / "red.js"
        settings = BENCH / "nodered" / "settings.js"
        return ["node", str(red), "-s", str(settings), "-u", str(NODE_RED_DIR)], env


GRIDWATCH = Consumer("gridwatch", "connected to broker")
NODE_RED = Consumer("node-red", "Connected to broker")


def install_node_red() -> bool:
    """Install Node-RED 4 and the InfluxDB nodes with npm into bench/out (once)."""
    if (NODE_RED_DIR / "node_modules" / "node-red").exists():
        return True
    if shutil.which("npm") is None:
        print("npm not found: Node-RED is not measured (apt-get install npm)", flush=True)
        return False
    NODE_RED_DIR.mkdir(parents=True, exist_ok=True)
    print("installing Node-RED 4 into bench/out/nodered ...", flush=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
         "node-red@4", "node-red-contrib-influxdb@0.7.0"],
        cwd=NODE_RED_DIR,
        check=True,
    )  # fmt: skip
    return True


def _payload(i: int, base: int) -> str:
    body = {"ts": base + i, "seq": i + 1, "locked": True, "open": False, "rssi_dbm": -60 - i % 30}
    return json.dumps({**body, "temp_c": 18.5})


def _payload_files(root: Path, n: int) -> list[Path]:
    base = int(time.time() * 1000) - 6 * 3_600_000
    files = []
    for start in range(0, n, CHUNK):
        path = root / f"payloads-{n}-{start}.txt"
        if not path.exists():
            lines = (_payload(i, base) for i in range(start, min(n, start + CHUNK)))
            path.write_text("\n".join(lines) + "\n")
        files.append(path)
    return files


def _kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def _count(influx: InfluxClient) -> int:
    series = influx.query('SELECT count("seq") FROM "door"')
    return int(series[0].values[0][1]) if series else 0


def _fresh_database(stack: Stack, database: str) -> InfluxClient:
    influx = InfluxClient(stack.influxd.url, database)
    influx.query(f'DROP DATABASE "{database}"')
    influx.ensure_database("INF")
    return influx


@contextmanager
def running(consumer: Consumer, stack: Stack, database: str) -> Iterator[subprocess.Popen[bytes]]:
    """The consumer, started and subscribed; stopped afterwards."""
    argv, env = consumer.command(stack, database)
    log_path = stack.root / f"{consumer.name}-{database}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while consumer.ready_text not in log_path.read_text():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{consumer.name} never became ready: see {log_path}")
            time.sleep(0.05)
        time.sleep(1.0)  # its SUBSCRIBE follows the CONNACK
        yield process
    finally:
        process.terminate()
        process.wait(30)


def _publish_files(stack: Stack, files: list[Path]) -> subprocess.Popen[bytes]:
    commands = [f"mosquitto_pub -p {stack.mosquitto.port} -t {TOPIC} -q 1 -l < {f}" for f in files]
    return subprocess.Popen(["bash", "-c", " && ".join(commands)])


def throughput(stack: Stack, consumer: Consumer, n: int, database: str) -> tuple[float, int]:
    """(msg/s published -> queryable, peak RSS KiB) of one consumer for ``n`` messages."""
    influx = _fresh_database(stack, database)
    files = _payload_files(stack.root, n)
    with running(consumer, stack, database) as process:
        t0 = time.perf_counter()
        publisher = _publish_files(stack, files)
        while _count(influx) < n:
            if time.perf_counter() - t0 > 600:
                raise TimeoutError(
                    f"{consumer.name}: only {_count(influx)} of {n} points after 600 s"
                )
            time.sleep(0.25)
        elapsed = time.perf_counter() - t0
        publisher.wait()
        rss = _kib(process.pid, "VmHWM:")
    return n / elapsed, rss


def latency(stack: Stack, rate: int, seconds: float, database: str) -> tuple[float, float]:
    """(p50, p99) ms from publish to queryable, publishing at ``rate`` msg/s through gridwatch.

    A pacing thread feeds ``mosquitto_pub -l`` (the C client, so the publisher is
    not the bottleneck) ``rate / 100`` lines every 10 ms and notes when it handed
    over each seq. A poller asks InfluxDB every 10 ms for the highest seq stored
    (ingest stores in arrival order), so a message's latency is the first poll
    that saw it minus its hand-over time. At most 65,000 messages: mosquitto_pub
    2.0.11's -l wraps its message ids beyond that at QoS 1.
    """
    influx = _fresh_database(stack, database)
    n = min(CHUNK, int(rate * seconds))
    base = int(time.time() * 1000) - 3_600_000
    sent_at = [0.0] * n
    seen_at = [0.0] * n
    with running(GRIDWATCH, stack, database):
        done = threading.Event()
        poller = threading.Thread(target=_poll_stored, args=(influx, seen_at, done), daemon=True)
        poller.start()
        publisher = subprocess.Popen(
            ["mosquitto_pub", "-p", str(stack.mosquitto.port), "-t", TOPIC, "-q", "1", "-l"],
            stdin=subprocess.PIPE,
        )
        assert publisher.stdin is not None
        per_tick = max(1, rate // 100)
        start = time.perf_counter()
        for first in range(0, n, per_tick):
            pause = start + first / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            last = min(n, first + per_tick)
            publisher.stdin.write(
                "".join(_payload(i, base) + "\n" for i in range(first, last)).encode()
            )
            publisher.stdin.flush()
            now = time.perf_counter()
            sent_at[first:last] = [now] * (last - first)
        publisher.stdin.close()
        deadline = time.perf_counter() + 60
        while not seen_at[-1] and time.perf_counter() < deadline:
            time.sleep(0.05)
        done.set()
        publisher.wait(30)
    delays = sorted((seen - sent) * 1000 for seen, sent in zip(seen_at, sent_at, strict=True))
    return statistics.median(delays), delays[int(0.99 * (len(delays) - 1))]


def _poll_stored(influx: InfluxClient, seen_at: list[float], done: threading.Event) -> None:
    marked = 0
    while not done.is_set() and marked < len(seen_at):
        series = influx.query(f'SELECT last("seq") FROM "door" WHERE "device_id" = \'{DEVICE}\'')
        now = time.perf_counter()
        stored = int(series[0].values[0][1]) if series else 0
        for i in range(marked, min(stored, len(seen_at))):
            seen_at[i] = now
        marked = max(marked, stored)
        time.sleep(0.01)


def backlog_memory(stack: Stack, n: int, database: str) -> tuple[int, float]:
    """(peak RSS KiB, drain seconds): ``n`` messages wait in the broker while InfluxDB is down."""
    influx = _fresh_database(stack, database)
    files = _payload_files(stack.root, n)
    with running(GRIDWATCH, stack, database) as process:
        stack.influxd.stop()
        try:
            _publish_files(stack, files).wait()
            time.sleep(3)  # ingest has taken all it will take
        finally:
            stack.influxd.start()
        t0 = time.perf_counter()
        while _count(influx) < n:
            if time.perf_counter() - t0 > 600:
                raise TimeoutError(f"backlog: only {_count(influx)} of {n} after 600 s")
            time.sleep(0.25)
        return _kib(process.pid, "VmHWM:"), time.perf_counter() - t0
