"""API latency under an open-loop load on loopback: latest state, alert list, 24 h history.

A `gridwatch api` process (uvicorn, production mode, as deployed) serves a
private stack (bench/common.py): the demo registry, a simulated day of all 342
devices of 张家新村 decoded by ingest's own code into influxd, and a few hundred
alerts in SQL. An operator logs in and sends its bearer token, as a control
room does. The alert list is measured twice: as a screen polls it (the same
page again and again, which the API serves from its one-second page cache),
and with a parameter that changes on every request (every page read from SQL
and encoded anew).

The load is open-loop, like wrk2: request *i* is due at ``start + i / rate``
whatever happened before, goes out on the first idle keep-alive connection of a
pool, and its latency runs from when it was due. A slow answer therefore cannot
hold the next requests back and hide the queue it causes (coordinated
omission): a closed-loop tool such as wrk sends the next request only after an
answer, so under a stall it simply sends fewer and reports the survivors.

The client speaks HTTP/1.1 over asyncio streams (on uvloop) with pre-encoded
requests: on 2 shared cores, an HTTP library's own per-request cost (httpx:
more than a millisecond) would be measured as the server's latency and take
CPU from it.

    .venv/bin/python bench/api_latency.py          # 3 repetitions, p50/p99 of each
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import uvloop
from sqlalchemy import select
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerts.models import SEVERITIES, Alert
from api.access import load_grid_map
from api.models import User
from api.security import hash_password
from bench.common import Stack, median_of, private_stack
from devices.contract import DeviceRecord
from gridwatch.clock import SimulatedClock, WallClock
from influx.client import InfluxClient
from ingest.decode import Accepted, Limits, decode_message
from registry.db import make_engine, make_sessionmaker
from registry.models import Grid
from registry.records import load_communities, load_devices
from simulators.engine import Simulation
from simulators.memory import MemoryTransport
from stack.servers import free_port

DATABASE = "apibench"
DOOR = "zjxc-door-b03-u2"
LAMP = "zjxc-lamp-a001"
OPERATOR, PASSWORD = "bench-operator", "bench-operator-password"
ALERTS = 300
CONNECTIONS = 32
SECONDS = 10.0
DAY_MS = 86_400_000
WRITE_BATCH = 5000


@dataclass(frozen=True)
class Target:
    """One benchmarked request and the rate it is sent at."""

    name: str
    path: str
    params: dict[str, str]
    rate: float
    goal_p99_ms: float
    # A parameter given a new value on each request (cycling through VARIANTS), so that
    # no page comes from the API's short-lived alert page cache.
    vary: str | None = None


# More than the requests of one cache lifetime (ALERT_PAGE_TTL_S) at the highest rate.
VARIANTS = 1000

TARGETS = (
    Target("latest state of one device", f"/api/v1/devices/{DOOR}/latest", {}, 500, 20),
    Target("alert list of a community", "/api/v1/alerts", {"community": "zjxc"}, 500, 20),
    Target(
        "alert list of a community, never from the cache",
        "/api/v1/alerts",
        {"community": "zjxc"},
        500,
        20,
        vary="since_ms",
    ),
    Target(
        "24 h history at 1-minute resolution",
        "/api/v1/telemetry/history",
        {"device_id": LAMP, "field": "power_w", "every": "1m"},
        50,
        100,
    ),
)


@dataclass(frozen=True)
class Run:
    """One load run: every request's latency (ms), and what failed."""

    latencies_ms: list[float]
    errors: int
    seconds: float

    def percentile(self, p: float) -> float:
        """The p-th percentile latency (nearest rank)."""
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def seed(stack: Stack) -> None:
    """A simulated day of the demo community in InfluxDB, alerts and an operator in SQL."""
    sessions = make_sessionmaker(make_engine(stack.sql_url))
    with sessions() as session:
        communities, devices = load_communities(session), load_devices(session)
    now = WallClock().now_ms()
    clock = SimulatedClock(now - DAY_MS, speed=0)
    recorder = MemoryTransport(clock, devices)
    simulation = Simulation(communities, devices, clock=clock, seed=7, transport=recorder)
    simulation.announce(online=True)
    simulation.run(now, threading.Event())
    by_id = {d.device_id: d for d in devices}
    lines = []
    for message in recorder.messages:
        outcome = decode_message(
            message.topic, message.payload, devices=by_id, now_ms=now, limits=Limits()
        )
        if isinstance(outcome, Accepted):
            lines.append(outcome.line)
    with InfluxClient(stack.influxd.url, DATABASE) as influx:
        influx.ensure_database("INF")
        for i in range(0, len(lines), WRITE_BATCH):
            influx.write("\n".join(lines[i : i + WRITE_BATCH]).encode())
    print(f"seeded {len(lines):,} points of a simulated day", flush=True)
    with sessions.begin() as session:
        _alerts(session, devices, now)
        session.add(
            User(
                username=OPERATOR,
                role="operator",
                community_id="zjxc",
                password_hash=hash_password(PASSWORD),
                active=True,
                created_ms=now,
            )
        )


def _alerts(session: Session, devices: list[DeviceRecord], now: int) -> None:
    """Alerts spread over the day as the alerts service writes them: most resolved, some open."""
    grid_map = load_grid_map(session, "zjxc")
    names = {g.id: g.name for g in session.scalars(select(Grid))}
    rules = {
        "door": "door.held_open",
        "streetlight": "light.failure",
        "water_meter": "water.no_use",
    }
    candidates = [d for d in devices if d.kind in rules]
    rng = random.Random(7)
    for i in range(ALERTS):
        device = rng.choice(candidates)
        opened = now - DAY_MS + i * DAY_MS // ALERTS
        status = "resolved" if i < ALERTS - 20 else rng.choice(("open", "acknowledged"))
        rule = rules[device.kind]
        session.add(
            Alert(
                community_id=device.community,
                rule=rule,
                kind=device.kind,
                subject=device.device_id,
                device_id=device.device_id,
                severity=rng.choice(SEVERITIES),
                status=status,
                title=f"{device.place} 告警",
                action="请到现场查看",
                place=f"张家新村 {device.place}",
                grid=names.get(grid_map.device_grid.get(device.device_id, 0)),
                facts={"value": rng.randint(1, 100)},
                open_key=None if status == "resolved" else f"{rule}|{device.device_id}",
                auto_resolve=True,
                occurrences=1,
                since_ms=opened,
                opened_ms=opened,
                last_ms=opened + 60_000,
                acknowledged_ms=None if status == "open" else opened + 120_000,
                acknowledged_by=None if status == "open" else OPERATOR,
                resolved_ms=opened + 600_000 if status == "resolved" else None,
                resolved_by="system" if status == "resolved" else None,
            )
        )


@contextmanager
def serving(stack: Stack, extra_env: dict[str, str] | None = None) -> Iterator[int]:
    """A `gridwatch api` process on the stack (production mode); yields its port."""
    port = free_port()
    env = {
        **os.environ,
        "GW_ENV": "production",
        "GW_API_SECRET_KEY": "b" * 64,
        "GW_SNAPSHOT_LINK_KEY": "c" * 64,
        "GW_STATE_DIR": str(stack.root),
        "GW_DATABASE_URL": stack.sql_url,
        "GW_MQTT_URL": stack.mosquitto.url,
        "GW_INFLUX_URL": stack.influxd.url,
        "GW_INFLUX_DB": DATABASE,
        "GW_API_PORT": str(port),
        "GW_API_CLIENT_ID": "api-bench",
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "gridwatch.cli", "api"]
    with (Path(stack.root) / "api.log").open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start (see {stack.root}/api.log)")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(30)


def bearer_token(port: int) -> str:
    """The operator's bearer token, from the API's login."""
    response = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/login/access-token",
        data={"username": OPERATOR, "password": PASSWORD},
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends a fixed request and reads the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> _Connection:
        """Connect to the API."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bool]:
        """Send ``request``; (status, whether the server keeps the connection)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        keep = True
        for line in head.lower().split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                length = int(line[15:])
            elif line.startswith(b"connection:") and b"close" in line:
                keep = False
        await self.reader.readexactly(length)
        return status, keep

    def close(self) -> None:
        """Close the socket."""
        self.writer.close()


def request_bytes(port: int, target: Target, token: str) -> list[bytes]:
    """The target's GET requests, encoded once: one, or VARIANTS if it varies."""
    variants = [{}] if target.vary is None else [{target.vary: str(i)} for i in range(VARIANTS)]
    requests = []
    for variant in variants:
        query = urlencode(target.params | variant)
        path = f"{target.path}?{query}" if query else target.path
        requests.append(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {token}\r\nAccept: application/json\r\n\r\n"
            ).encode()
        )
    return requests


async def open_loop(port: int, requests: list[bytes], rate: float, seconds: float) -> Run:
    """Send ``requests`` in turn, ``rate`` a second for ``seconds``; latency from each due time."""
    # perf_counter, not loop.time(): uvloop's clock has millisecond steps.
    clock = time.perf_counter
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        idle.put_nowait(await _Connection.open(port))
    latencies: list[float] = []
    errors = 0

    async def one(due: float, request: bytes) -> None:
        nonlocal errors
        connection = await idle.get()
        try:
            status, keep = await connection.exchange(request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status, keep = 0, False
        latencies.append((clock() - due) * 1000)
        if status != 200:
            errors += 1
        if not keep:
            # Replaced at once, so the pool stays at CONNECTIONS; a reconnect is an error above.
            connection.close()
            connection = await _Connection.open(port)
        idle.put_nowait(connection)

    total = int(rate * seconds)
    # The client's own collector pauses would be measured as the server's latency: a
    # full collection walks every object this process imported.
    gc.collect()
    gc.freeze()
    gc.disable()
    start = clock() + 0.05
    tasks = []
    try:
        for i in range(total):
            due = start + i / rate
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, requests[i % len(requests)])))
        await asyncio.gather(*tasks)
    finally:
        gc.enable()
    elapsed = clock() - start
    while not idle.empty():
        idle.get_nowait().close()
    return Run(latencies, errors, elapsed)


def check_answer(port: int, target: Target, token: str) -> None:
    """The target answers 200 with data (a benchmark of errors would prove nothing)."""
    response = httpx.get(
        f"http://127.0.0.1:{port}{target.path}",
        params=target.params,
        headers={"Authorization": f"Bearer {token}"},
    )
    response.raise_for_status()
    body = response.json()
    filled = (
        body.get("values") or body.get("items") or (body.get("series") or [{}])[0].get("points")
    )
    if not filled:
        raise RuntimeError(f"{target.name}: an empty answer: {json.dumps(body)[:300]}")


def measure(stack: Stack, reps: int, seconds: float = SECONDS) -> dict[str, list[Run]]:
    """``reps`` runs of every target against one API process on the seeded stack."""
    runs: dict[str, list[Run]] = {t.name: [] for t in TARGETS}
    with serving(stack) as port:
        token = bearer_token(port)
        for target in TARGETS:
            check_answer(port, target, token)
            request = request_bytes(port, target, token)
            uvloop.run(open_loop(port, request, target.rate / 5, 1.0))  # warm up
        for rep in range(reps):
            for target in TARGETS:  # interleaved, so drift on the machine hits all alike
                run = uvloop.run(
                    open_loop(port, request_bytes(port, target, token), target.rate, seconds)
                )
                runs[target.name].append(run)
                print(
                    f"rep {rep + 1}: {target.name} at {target.rate:.0f}/s: "
                    f"p50 {run.percentile(50):.1f} ms, p99 {run.percentile(99):.1f} ms, "
                    f"max {max(run.latencies_ms):.1f} ms, {run.errors} errors",
                    flush=True,
                )
    return runs


def main() -> None:
    """Seed a private stack, measure three times, print the medians."""
    with private_stack() as stack:
        seed(stack)
        runs = measure(stack, 3)
    print(
        "\n| what | rate | p50 | p99 | goal p99 | errors |\n| --- | --- | --- | --- | --- | --- |"
    )
    for target in TARGETS:
        reps = runs[target.name]
        p50 = median_of([r.percentile(50) for r in reps])
        p99 = median_of([r.percentile(99) for r in reps])
        errors = sum(r.errors for r in reps)
        print(
            f"| {target.name} | {target.rate:.0f}/s | {p50:.1f} ms | {p99:.1f} ms "
            f"| < {target.goal_p99_ms:.0f} ms | {errors} |"
        )


if __name__ == "__main__":
    main()
