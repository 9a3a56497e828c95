"""The CLI's writers wait for another process's write on the shared SQLite file.

Under ``make run`` the alerts service, the API and the imagery service write the
SQLite file all the time. A command that reads and then writes in a deferred
transaction (``gridwatch registry import``, ``gridwatch users add``, the broker
credentials, the city of ``gridwatch simulate --communities N``) failed at once
with "database is locked" when one of them committed in between; through
``registry.db.writing`` it waits for that commit instead.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Select, select

from api.cli import add_user
from api.models import User
from broker.models import MqttAccount
from gridwatch.security import issue_and_sync
from gridwatch.services import import_community
from gridwatch.settings import Settings
from registry.db import make_engine, make_sessionmaker, migrate, writing
from registry.importer import import_document
from registry.models import Community, Device
from simulators.city import community_id, register_city
from tests.test_registry import small_document

# How long the other process holds the write lock: the writer under test has read
# by then, so a deferred transaction would find its snapshot stale.
HOLD_S = 1.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a migrated SQLite file holding a community ``other``."""
    # Explicit, so that a GW_* variable of the shell cannot point the test at a real
    # database or a running broker (issue_and_sync reloads the broker of the pid file).
    state = tmp_path / "state"
    settings = Settings(
        state_dir=state,
        database_url="",
        broker_auth_dir=str(state / "auth"),
        broker_pid_file=str(state / "mosquitto.pid"),
    )
    migrate(settings.sql_url)
    engine = make_engine(settings.sql_url)
    with writing(make_sessionmaker(engine)) as session:
        import_document(session, small_document("other"))
    engine.dispose()
    return settings


@contextmanager
def another_process_writing(settings: Settings) -> Iterator[None]:
    """Another process holds the write lock, writes, and commits ``HOLD_S`` later."""
    path = settings.state_dir / "gridwatch.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE communities SET name = name || '·' WHERE id = 'other'")
    commit = threading.Timer(HOLD_S, other.execute, ("COMMIT",))
    commit.start()
    try:
        yield
    finally:
        commit.join()
        other.close()


def import_tiny(settings: Settings) -> None:
    path = settings.state_dir / "tiny.yaml"
    path.write_text(yaml.safe_dump(small_document("tiny"), allow_unicode=True), encoding="utf-8")
    import_community(settings, path)


def add_operator(settings: Settings) -> None:
    list(add_user(settings, "op", "operator", "other", [], "a-long-password", api_key=True))


def issue_device_account(settings: Settings) -> None:
    issue_and_sync(settings, ["other-door"])


def register_one_community(settings: Settings) -> None:
    engine = make_engine(settings.sql_url)
    try:
        register_city(make_sessionmaker(engine), 1)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("writer", "written"),
    [
        (import_tiny, select(Device.device_id).where(Device.community_id == "tiny")),
        (add_operator, select(User.username).where(User.username == "op")),
        (issue_device_account, select(MqttAccount.username)),
        (register_one_community, select(Community.id).where(Community.id == community_id(1))),
    ],
    ids=["registry import", "users add", "credentials issue", "simulate --communities"],
)
def test_a_writer_waits_for_another_process_writing(
    settings: Settings, writer: Callable[[Settings], None], written: Select[tuple[str]]
) -> None:
    started = time.monotonic()
    with another_process_writing(settings):
        writer(settings)
    waited_s = time.monotonic() - started
    assert waited_s >= HOLD_S * 0.9
    engine = make_engine(settings.sql_url)
    with make_sessionmaker(engine)() as session:
        assert session.scalars(written).first() is not None
        # The other process's write is kept, not overwritten from a stale snapshot.
        other = session.get(Community, "other")
        assert other is not None and other.name.endswith("·")
    engine.dispose()


def test_a_migration_waits_for_another_process_writing(settings: Settings) -> None:
    with another_process_writing(settings):
        started = time.monotonic()
        migrate(settings.sql_url)  # nothing pending: it reads the version under the lock
        waited = time.monotonic() - started
    assert waited >= HOLD_S * 0.9
