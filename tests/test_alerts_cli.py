"""``gridwatch alerts list|ack|resolve|comment`` on a database holding an alert."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from alerts.cli import app
from alerts.models import Alert, AlertComment
from alerts.sql import Database
from gridwatch.settings import get_settings
from registry.db import make_engine, make_sessionmaker, migrate
from tests.alerts_cases.harness import CaseRunner, StandIn


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """A database where door zjxc-door-b03-u2 was forced open (alert #1)."""
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    migrate(url)
    monkeypatch.setenv("GW_DATABASE_URL", url)
    get_settings.cache_clear()
    sessions = make_sessionmaker(make_engine(url))
    case = {
        "start": "2026-11-20T23:00:00+08:00",
        "steps": [{"at": "0s", "device": "zjxc-door-b03-u2", "event": "forced_open"}],
    }
    with StandIn() as stand_in:
        CaseRunner(case, sessions, stand_in).run()
    yield Database(sessions)
    get_settings.cache_clear()


def test_list_acknowledge_comment_resolve(database: Database) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert "#1" in listed.output and "单元门被强行打开" in listed.output
    assert runner.invoke(app, ["ack", "1", "--by", "李秀梅"]).exit_code == 0
    said = runner.invoke(app, ["comment", "1", "--by", "李秀梅", "--text", "无人闯入"])
    assert said.exit_code == 0
    assert (
        runner.invoke(app, ["resolve", "1", "--by", "李秀梅", "--note", "门已修好"]).exit_code == 0
    )
    again = runner.invoke(app, ["resolve", "1", "--by", "李秀梅"])
    assert again.exit_code != 0 and "already resolved" in again.output
    assert runner.invoke(app, ["list"]).output == ""
    assert "resolved" in runner.invoke(app, ["list", "--all"]).output
    with database.read() as session:
        alert = session.scalars(select(Alert)).one()
        assert [(t.transition, t.by, t.note) for t in alert.transitions] == [
            ("opened", "system", None),
            ("acknowledged", "李秀梅", None),
            ("resolved", "李秀梅", "门已修好"),
        ]
        assert [c.text for c in session.scalars(select(AlertComment))] == ["无人闯入"]
