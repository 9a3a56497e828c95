"""Rule evaluation throughput: a day of the demo community through the alert engine, one process.

The day (a normal day of 张家新村, ~440,000 messages, from the simulators'
``normal_day`` scenario) is generated in memory first; then it is timed twice:

- ``engine``: decoding (ingest's ``decode_message``) and every rule, in memory;
- ``processor``: the same plus SQL: alerts, rule states and the outbox committed
  every 5,000 messages, as the service does (SQLite file, WAL).

Each is given per second of wall time and per second of the thread's CPU time:
on this shared 2-core machine the wall-time figure moves with whatever else
runs, the CPU-time one is what one core of the process can do.

    python bench/alerts_throughput.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerts.directory import load_directory
from alerts.engine import Engine, default_rules
from alerts.service import AlertProcessor
from alerts.sql import Database
from gridwatch.clock import WallClock
from registry.db import make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_file
from registry.records import load_communities, load_devices
from simulators.scenario import SCENARIOS_DIR, load_scenario, play

BATCH = 5000
END_BY_MS = int(datetime.fromisoformat("2026-11-21T12:00:00+08:00").timestamp() * 1000)
Messages = list[tuple[str, bytes, int]]


def demo_database() -> Database:
    """A scratch SQLite database with the demo community."""
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='gridwatch-bench-')) / 'alerts.db'}"
    migrate(url)
    sessions = make_sessionmaker(make_engine(url))
    with sessions.begin() as session:
        import_file(session, DEMO_COMMUNITY_FILE)
    return Database(sessions)


def demo_day(database: Database) -> Messages:
    """A normal day of the whole demo community, as (topic, payload, arrival) in order."""
    with database.read() as session:
        communities, devices = load_communities(session), load_devices(session)
    messages: Messages = []
    scenario = load_scenario(SCENARIOS_DIR / "normal_day.yaml")
    play(
        scenario,
        communities,
        devices,
        end_by_ms=END_BY_MS,
        sink=lambda m: messages.append((m.topic, m.payload, m.received_ms)),
    )
    return messages


@dataclass(frozen=True)
class Rates:
    """Events per second of wall time and per second of CPU time."""

    wall: float
    cpu: float


def _timed(run: Callable[[], None], events: int) -> Rates:
    wall, cpu = time.perf_counter(), time.thread_time()
    run()
    return Rates(events / (time.perf_counter() - wall), events / (time.thread_time() - cpu))


def engine_rate(database: Database, messages: Messages) -> Rates:
    """Decoding and the rules, in memory."""
    with database.read() as session:
        engine = Engine(default_rules(), load_directory(session))

    def run() -> None:
        for topic, payload, received in messages:
            engine.handle(topic, payload, received)

    return _timed(run, len(messages))


def processor_rate(database: Database, messages: Messages) -> Rates:
    """The same with the SQL transaction every ``BATCH`` messages."""
    processor = AlertProcessor(
        database, base_url="http://127.0.0.1:18000", wall=WallClock(), escalate_after_ms=900_000
    )

    def run() -> None:
        for i in range(0, len(messages), BATCH):
            processor.process(messages[i : i + BATCH])

    return _timed(run, len(messages))


def measure(messages: Messages) -> tuple[Rates, Rates]:
    """(engine, processor) rates on a fresh database."""
    database = demo_database()
    return engine_rate(database, messages), processor_rate(database, messages)


if __name__ == "__main__":
    day = demo_day(demo_database())
    engine, processor = measure(day)
    print(
        f"{len(day)} messages: engine {engine.wall:,.0f} events/s ({engine.cpu:,.0f} per CPU s), "
        f"with SQL {processor.wall:,.0f} events/s ({processor.cpu:,.0f} per CPU s)"
    )
