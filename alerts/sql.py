"""Sessions for the alerts service, with SQLite's one-writer rule kept inside the process.

The registry begins SQLite transactions with a plain (deferred) ``BEGIN``. In
WAL mode a transaction that reads and then writes fails at once ("database is
locked", SQLITE_BUSY_SNAPSHOT) if another connection committed in between,
instead of waiting. The service's threads (processor, senders, exporter) all
read before they write, so on SQLite their write transactions take turns on a
lock; PostgreSQL needs none.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy.orm import Session, sessionmaker


class Database:
    """Read sessions, and write transactions that take turns on SQLite."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        bind = sessions.kw.get("bind")
        sqlite = bind is not None and bind.dialect.name == "sqlite"
        self._lock: Any = threading.Lock() if sqlite else nullcontext()

    def read(self) -> Session:
        """A session for reading (use it as a context manager)."""
        return self.sessions()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction: committed at the end, rolled back on an error."""
        with self._lock, self.sessions.begin() as session:
            yield session
