"""Ingest under faults, against real Mosquitto and influxd: exact counts by device and seq.

Each test streams QoS 1 door heartbeats (unique ts and consecutive seq per
device) from a persistent-session publisher while it injures the stack, then
checks that InfluxDB holds every seq of every device exactly once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from influx.client import InfluxClient
from ingest.deadletters import DEAD_LETTER_MEASUREMENT
from registry.db import make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_file
from stack.servers import Influxd, Mosquitto
from tests.ingest_harness import (
    DOORS,
    IngestProcess,
    Publisher,
    all_stored,
    run_in_background,
    stored_seqs,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sql_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'gridwatch.db'}"
    migrate(url)
    with make_sessionmaker(make_engine(url))() as session:
        import_file(session, DEMO_COMMUNITY_FILE)
        session.commit()
    return url


@pytest.fixture()
def broker(stack_root: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own, so its sessions and queues start empty."""
    with Mosquitto(stack_root / f"mosquitto-{uuid.uuid4().hex[:8]}") as server:
        yield server


@pytest.fixture()
def publisher(broker: Mosquitto) -> Iterator[Publisher]:
    pub = Publisher(broker.url)
    yield pub
    pub.close()


def _ingest(
    broker: Mosquitto,
    influx: InfluxClient,
    sql_url: str,
    tmp_path: Path,
    name: str = "ingest",
    **env: str,
) -> IngestProcess:
    process = IngestProcess(broker.url, influx, sql_url, tmp_path / f"{name}.log", **env)
    process.start()
    return process


def _assert_exactly_once(influx: InfluxClient, sent: dict[str, list[int]]) -> None:
    for device in DOORS:
        assert stored_seqs(influx, device) == sent[device], device


def test_sigkill_mid_stream_loses_nothing(
    broker: Mosquitto, influx_db: InfluxClient, sql_url: str, publisher: Publisher, tmp_path: Path
) -> None:
    ingest = _ingest(broker, influx_db, sql_url, tmp_path)
    try:
        publisher.publish_stream(12_000, rate=3_000, at={5_000: ingest.kill, 7_000: ingest.start})
        publisher.wait_delivered()
        wait_until(lambda: all_stored(influx_db, publisher.sent), 90, "every message stored")
    finally:
        ingest.stop()
    _assert_exactly_once(influx_db, publisher.sent)


def test_influxdb_down_for_30_s_loses_nothing_and_memory_stays_bounded(
    broker: Mosquitto,
    influx_db: InfluxClient,
    influxd: Influxd,
    sql_url: str,
    publisher: Publisher,
    tmp_path: Path,
) -> None:
    ingest = _ingest(broker, influx_db, sql_url, tmp_path, GW_INGEST_INFLIGHT="5000")
    rss: list[int] = []

    def outage() -> None:
        influxd.stop()
        for _ in range(60):  # 30 s down, sampling the ingestor's memory
            rss.append(ingest.rss_kib())
            time.sleep(0.5)
        influxd.start()

    try:
        stream = run_in_background(lambda: publisher.publish_stream(40_000, rate=1_000))
        time.sleep(3)
        outage()
        stream.join()
        publisher.wait_delivered()
        wait_until(lambda: all_stored(influx_db, publisher.sent), 120, "the backlog drained")
    finally:
        ingest.stop()
    _assert_exactly_once(influx_db, publisher.sent)
    assert max(rss) < 150 * 1024, f"ingest grew to {max(rss) // 1024} MiB during the outage"


def test_broker_restart_mid_stream_loses_nothing(
    broker: Mosquitto, influx_db: InfluxClient, sql_url: str, publisher: Publisher, tmp_path: Path
) -> None:
    ingest = _ingest(broker, influx_db, sql_url, tmp_path)
    try:
        publisher.publish_stream(9_000, rate=3_000, at={4_000: broker.restart})
        publisher.wait_delivered()
        wait_until(lambda: all_stored(influx_db, publisher.sent), 90, "every message stored")
    finally:
        ingest.stop()
    _assert_exactly_once(influx_db, publisher.sent)


def test_two_replicas_share_the_load_and_a_killed_one_loses_nothing(
    broker: Mosquitto, influx_db: InfluxClient, sql_url: str, publisher: Publisher, tmp_path: Path
) -> None:
    share = {"GW_INGEST_SHARE_GROUP": "ingest"}
    first = _ingest(
        broker, influx_db, sql_url, tmp_path, "first", GW_INGEST_CLIENT_ID="ingest-1", **share
    )
    second = _ingest(
        broker, influx_db, sql_url, tmp_path, "second", GW_INGEST_CLIENT_ID="ingest-2", **share
    )
    try:
        # The killed replica comes back (as compose's restart policy does) and drains
        # what its persistent session kept for it.
        publisher.publish_stream(12_000, rate=3_000, at={5_000: first.kill, 9_000: first.start})
        publisher.wait_delivered()
        wait_until(lambda: all_stored(influx_db, publisher.sent), 90, "every message stored")
        shares = (first.written(), second.written())
    finally:
        first.stop()
        second.stop()
    _assert_exactly_once(influx_db, publisher.sent)
    assert min(shares) > 0, f"one replica did all the work: {shares}"


HOSTILE: list[tuple[str, bytes, str]] = [
    ("sc/zjxc/door/zjxc-door-b01-u1/telemetry", b'{"ts": 1, "seq":', "bad_json"),
    ("sc/zjxc/door/zjxc-door-b01-u1/telemetry", b'{"ts": NaN, "seq": 1}', "bad_json"),
    ("sc/zjxc/door/zjxc-door-b01-u1/telemetry", b'{"ts": 1e999, "seq": 1}', "schema"),
    ("sc/zjxc/door/zjxc-door-b01-u1/telemetry", b'{"ts": "now", "seq": 1}', "schema"),
    (
        "sc/zjxc/door/zjxc-door-b01-u1/event",
        b'{"ts": 1, "seq": 1, "event": "unlock\\" OR 1=1"}',
        "schema",
    ),
    ("sc/zjxc/door/zjxc-door-b01-u1/telemetry", b"x" * (1024 * 1024), "too_large"),
    ("sc/zjxc/door/intruder/telemetry", b"{}", "unknown_device"),
    ("sc/zjxc/door/a,b=c d/telemetry", b"{}", "bad_topic"),
    ("sc/zjxc/door/zjxc-door-b01-u1/telemetry", b"\x00\xff\xfe", "bad_json"),
    ("sc/zjxc/door/zjxc-door-b01-u1/telemetry", b"[]", "schema"),
]


def test_hostile_tenth_of_the_stream_is_dead_lettered_and_the_rest_stored(
    broker: Mosquitto, influx_db: InfluxClient, sql_url: str, publisher: Publisher, tmp_path: Path
) -> None:
    ingest = _ingest(broker, influx_db, sql_url, tmp_path)
    expected: dict[str, int] = {}

    def every_tenth_hostile(i: int) -> tuple[str, bytes] | None:
        if i % 10:
            return None
        topic, payload, reason = HOSTILE[(i // 10) % len(HOSTILE)]
        expected[reason] = expected.get(reason, 0) + 1
        return topic, payload

    try:
        publisher.publish_stream(5_000, rate=2_000, make=every_tenth_hostile)
        publisher.wait_delivered()
        wait_until(lambda: all_stored(influx_db, publisher.sent), 90, "every good message stored")
        wait_until(lambda: _dead_letters(influx_db) == expected, 30, "every dead letter stored")
        assert ingest.process is not None and ingest.process.poll() is None, "ingest died"
    finally:
        ingest.stop()
    _assert_exactly_once(influx_db, publisher.sent)
    query = f"SELECT topic, payload, size FROM {DEAD_LETTER_MEASUREMENT} WHERE reason = 'too_large'"
    sample = influx_db.query(query)[0].records()[0]
    assert sample["size"] == 1024 * 1024 and len(sample["payload"]) == 1024
    assert json.dumps(sample)  # what an operator queries is plain JSON


def _dead_letters(influx: InfluxClient) -> dict[str, int]:
    series = influx.query(
        f'SELECT count("size") FROM "{DEAD_LETTER_MEASUREMENT}" GROUP BY "reason"'
    )
    return {s.tags["reason"]: int(s.values[0][1]) for s in series}
