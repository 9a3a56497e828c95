"""End-to-end ingest throughput: published at QoS 1 -> queryable in InfluxDB.

Method of ../shared/peers/bench_e2e.py: a ``gridwatch ingest`` process is
started and subscribed; at t0 ``mosquitto_pub -l`` publishes N door telemetry
messages (65,000-line chunks: mosquitto_pub 2.0.11's -l wraps its message ids
at QoS 1), each one a distinct point; InfluxDB is polled every 250 ms until N
points are queryable (t1). rate = N / (t1 - t0). Peak RSS is the ingest
process's VmHWM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Stack
from influx.client import InfluxClient

DEVICE = "zjxc-door-b01-u1"
TOPIC = f"sc/zjxc/door/{DEVICE}/telemetry"
CHUNK = 65_000


def _payload_files(root: Path, n: int) -> list[Path]:
    base = int(time.time() * 1000) - 6 * 3_600_000
    files = []
    for start in range(0, n, CHUNK):
        path = root / f"payloads-{start}.txt"
        with path.open("w") as out:
            for i in range(start, min(n, start + CHUNK)):
                body = {"ts": base + i, "seq": i + 1, "locked": True, "open": False}
                out.write(json.dumps({**body, "rssi_dbm": -60 - i % 30, "temp_c": 18.5}) + "\n")
        files.append(path)
    return files


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _count(influx: InfluxClient) -> int:
    series = influx.query('SELECT count("seq") FROM "door"')
    return int(series[0].values[0][1]) if series else 0


def measure(stack: Stack, n: int, database: str) -> tuple[float, int, float]:
    """Return (msg/s, peak RSS KiB, seconds) for ``n`` messages through one ingest process."""
    influx = InfluxClient(stack.influxd.url, database)
    influx.query(f'DROP DATABASE "{database}"')
    influx.ensure_database("INF")
    files = _payload_files(stack.root, n)
    env = {
        **os.environ,
        "GW_MQTT_URL": stack.mosquitto.url,
        "GW_INFLUX_URL": stack.influxd.url,
        "GW_INFLUX_DB": database,
        "GW_DATABASE_URL": stack.sql_url,
        "GW_INGEST_METRICS_PORT": "0",
        "GW_INGEST_CLIENT_ID": f"bench-{database}",
    }
    log = (stack.root / f"ingest-{database}.log").open("w")
    ingest = subprocess.Popen(
        [sys.executable, "-m", "gridwatch.cli", "ingest"], env=env, stdout=log, stderr=log
    )
    try:
        _wait_for_log(stack.root / f"ingest-{database}.log", "connected to broker")
        time.sleep(1.0)
        t0 = time.perf_counter()
        publisher = subprocess.Popen(
            [
                "bash",
                "-c",
                " && ".join(
                    f"mosquitto_pub -p {stack.mosquitto.port} -t {TOPIC} -q 1 -l < {f}"
                    for f in files
                ),
            ]
        )
        while _count(influx) < n:
            if time.perf_counter() - t0 > 600:
                raise TimeoutError(f"only {_count(influx)} of {n} points after 600 s")
            time.sleep(0.25)
        elapsed = time.perf_counter() - t0
        publisher.wait()
        rss = _peak_rss_kib(ingest.pid)
    finally:
        ingest.terminate()
        ingest.wait(30)
    return n / elapsed, rss, elapsed


def _wait_for_log(path: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never said {text!r}")
        time.sleep(0.05)
