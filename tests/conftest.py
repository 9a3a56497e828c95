"""Fixtures that start the real servers (mosquitto, influxd, PostgreSQL), once per session.

A server starts only when a test first asks for it. A missing server program fails
the test instead of skipping it: the suite must never pass without the real servers.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from influx.client import InfluxClient, quote_ident
from stack.servers import Influxd, Mosquitto, Postgres, Server, ServerError

S = TypeVar("S", bound=Server)

# Infinite: with a finite policy, a test writing fixed timestamps would start failing
# once the calendar moves past them. A test about retention makes its own policy.
INFLUX_RETENTION = "INF"


@pytest.fixture(scope="session")
def stack_root(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory for the servers' state; after a failed session only their logs stay.

    Not under tmp_path_factory: its directories are closed to other users, and as
    root the servers run as their own system accounts, which must reach their state.
    """
    root = Path(tempfile.mkdtemp(prefix="gridwatch-stack-"))
    root.chmod(0o711)
    yield root
    if request.session.testsfailed:
        keep_only_logs(root)
    else:
        shutil.rmtree(root, ignore_errors=True)


def keep_only_logs(root: Path) -> None:
    """Delete all but the ``*.log`` files under ``root``: kilobytes, not ~100 MB of data."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.suffix != ".log":
            path.unlink()


def started(make: Callable[[], S]) -> Iterator[S]:
    """Make and start a server, yield it, stop it; a missing program fails the test."""
    try:
        server = make()
        server.start()
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mosquitto(stack_root: Path) -> Iterator[Mosquitto]:
    """The session's broker."""
    yield from started(lambda: Mosquitto(stack_root / "mosquitto"))


@pytest.fixture(scope="session")
def influxd(stack_root: Path) -> Iterator[Influxd]:
    """The session's InfluxDB server."""
    yield from started(lambda: Influxd(stack_root / "influxd"))


@pytest.fixture(scope="session")
def postgres(stack_root: Path) -> Iterator[Postgres]:
    """The session's PostgreSQL cluster, without fsync: its data need not survive a crash."""
    yield from started(lambda: Postgres(stack_root / "postgres", fsync=False))


@pytest.fixture
def influx_db(influxd: Influxd) -> Iterator[InfluxClient]:
    """A client on a fresh InfluxDB database of this test's own, dropped afterwards."""
    with InfluxClient(influxd.url, f"test_{uuid.uuid4().hex[:12]}") as client:
        client.ensure_database(INFLUX_RETENTION)
        yield client
        client.query(f"DROP DATABASE {quote_ident(client.database)}")


@pytest.fixture
def server_dir(stack_root: Path) -> Path:
    """A fresh state directory, for a test that starts servers of its own."""
    return Path(tempfile.mkdtemp(dir=stack_root))
