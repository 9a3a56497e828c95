"""The simulators' scenarios (simulators/scenarios/*.yaml) through the alert processor.

Each scenario scripts faults on the simulated demo community and lists the
alerts they must raise: rule, device (or subject), severity, and the window in
which the alert opens. The simulation runs in memory (``simulators.scenario.play``)
and its messages go through the real processor, in batches, on SQLite; the
top-level alerts that opened must be exactly those expected (alerts filed under
a group, e.g. lamps under their circuit's alert, are the group's business).
``normal_day`` runs the whole community for 24 hours and must raise no alert.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from alerts.models import Alert
from alerts.service import AlertProcessor
from alerts.sql import Database
from gridwatch.clock import WallClock
from registry.db import make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_file
from registry.records import load_communities, load_devices
from simulators.memory import Message
from simulators.scenario import ExpectedAlert, load_scenario, play, shipped_scenarios

SCENARIOS = shipped_scenarios()
# A fixed end, so every run is the same run (scenarios end no later than this).
END_BY_MS = int(datetime.fromisoformat("2026-11-21T12:00:00+08:00").timestamp() * 1000)
BATCH = 5000
LOCAL = ZoneInfo("Asia/Shanghai")
WHOLE_COMMUNITY = {"normal_day"}


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file holding the demo community, copied by each test."""
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    url = f"sqlite:///{path}"
    migrate(url)
    engine = make_engine(url)
    with make_sessionmaker(engine).begin() as session:
        import_file(session, DEMO_COMMUNITY_FILE)
    engine.dispose()
    return path


def _matches(alert: Alert, expected: ExpectedAlert) -> bool:
    about = (
        alert.device_id == expected.device if expected.device else alert.subject == expected.subject
    )
    return (
        alert.rule == expected.rule
        and about
        and expected.severity in (None, alert.severity)
        and expected.earliest_ms <= alert.opened_ms <= expected.latest_ms
    )


def _describe(alerts: list[Any]) -> list[tuple[str, str | None, str, str]]:
    def at(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, LOCAL).isoformat(timespec="seconds")

    return [
        (a.rule, a.device or a.subject, a.severity or "", at(a.earliest_ms))
        if isinstance(a, ExpectedAlert)
        else (a.rule, a.device_id or a.subject, a.severity, at(a.opened_ms))
        for a in alerts
    ]


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_raises_exactly_its_expected_alerts(
    path: Path, demo_database: Path, tmp_path: Path
) -> None:
    scenario = load_scenario(path)
    copy = tmp_path / "alerts.db"
    shutil.copy(demo_database, copy)
    engine = make_engine(f"sqlite:///{copy}")
    database = Database(make_sessionmaker(engine))
    with database.read() as session:
        communities, devices = load_communities(session), load_devices(session)
    cast = devices if path.stem in WHOLE_COMMUNITY else scenario.involved(devices)
    processor = AlertProcessor(
        database, base_url="https://gw.example.cn", wall=WallClock(), escalate_after_ms=900_000
    )
    batch: list[tuple[str, bytes, int]] = []

    def sink(message: Message) -> None:
        batch.append((message.topic, message.payload, message.received_ms))
        if len(batch) >= BATCH:
            processor.process(batch)
            batch.clear()

    played = play(scenario, communities, cast, end_by_ms=END_BY_MS, sink=sink)
    processor.process(batch, now_ms=played.end_ms)
    with database.read() as session:
        opened = list(
            session.scalars(select(Alert).where(Alert.parent_id.is_(None)).order_by(Alert.id))
        )
    engine.dispose()
    unmatched = list(played.expected)
    extra = []
    for alert in opened:
        match = next((e for e in unmatched if _matches(alert, e)), None)
        if match is not None:
            unmatched.remove(match)
        elif not (scenario.spontaneous_detections and alert.rule == "robot.scene"):
            extra.append(alert)
    assert (_describe(unmatched), _describe(extra)) == ([], [])
