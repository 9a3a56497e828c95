"""Sessions for the alerts service: reads, and write transactions that wait their turn.

Write transactions go through ``registry.db.writing``: on SQLite they hold the
write lock from their first statement, so a transaction that reads before it
writes waits for another process's writer instead of failing with "database is
locked". The service's own threads (processor, senders, exporter) take turns on
a lock first: SQLite's busy handler would make them wait by polling with sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from registry.db import writing


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
        with self._lock, writing(self.sessions) as session:
            yield session
