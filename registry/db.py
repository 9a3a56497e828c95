"""Engines, sessions and migrations for the registry (SQLite by default, PostgreSQL deployed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
# Any constant works: it only has to be the same in every process that migrates.
_MIGRATION_LOCK_ID = 0x67726964  # "grid"
SQLITE_BUSY_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = 10
# Execution options of a connection whose transaction will write: on SQLite it
# begins with BEGIN IMMEDIATE (see writing()).
_WRITER = "gridwatch_writer"
WRITER_OPTIONS = {_WRITER: True}


def make_engine(url: str) -> Engine:
    """Create an engine; for SQLite, create the file's directory and set up FKs, WAL, BEGIN."""
    parsed = make_url(url)
    # Ingest reloads a whole city's device attributes (JSON) periodically: msgspec
    # decodes them several times faster than the json module.
    fast_json: dict[str, Any] = {"json_deserializer": msgspec.json.decode}
    if parsed.get_backend_name() == "postgresql":
        # Without a timeout, a connect to a server whose network drops packets hangs
        # for minutes: the service stalls instead of reporting SQL down and retrying.
        timeout = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        return create_engine(parsed, pool_pre_ping=True, connect_args=timeout, **fast_json)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, **fast_json)
    _create_parent_directory(parsed)
    # Several services share the file (ingest, alerts, imagery, the API); a writer
    # waits for another's commit instead of failing after sqlite3's default 5 s.
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, **fast_json)
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def writing(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A write transaction, committed at the end; on SQLite it holds the write lock from
    its first statement.

    Several processes share the SQLite file (ingest, alerts, imagery, the API). In
    WAL mode a deferred transaction that reads and then writes fails at once
    ("database is locked", SQLITE_BUSY_SNAPSHOT) when another process committed in
    between, without waiting for the busy timeout. A transaction that takes the lock
    first waits for the other writer instead, then reads the latest data.
    """
    with sessions.begin() as session:
        session.connection(execution_options=WRITER_OPTIONS)
        yield session


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (``alembic upgrade head``)."""
    # Imported here: services that only read the registry (ingest) need not load Alembic.
    from alembic import command

    engine = make_engine(url)
    try:
        # As a writer (BEGIN IMMEDIATE on SQLite): it reads the schema version, then
        # writes, while services that already run may be writing the same file.
        with engine.execution_options(**WRITER_OPTIONS).begin() as connection:
            _lock_against_concurrent_migrations(connection)
            config = alembic_config()
            # env.py migrates this connection, inside the transaction holding the lock.
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def alembic_config() -> Config:
    """The Alembic configuration shipped inside the package (``registry/alembic.ini``)."""
    from alembic.config import Config

    return Config(ALEMBIC_INI)


def _create_parent_directory(url: URL) -> None:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's own transaction handling skips BEGIN before DDL and
    # SELECT, so migrations and imports would not be atomic: _begin_sqlite_transaction
    # emits BEGIN instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # SQLite leaves foreign keys unenforced unless asked, per connection.
        cursor.execute("PRAGMA foreign_keys = ON")
        # WAL lets the API and ingest read while an import writes.
        cursor.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL is still crash-safe; only the last commits may roll back.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    writer = connection.get_execution_options().get(_WRITER, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


def _lock_against_concurrent_migrations(connection: Connection) -> None:
    # Services started together (docker compose) would otherwise race to create
    # the same tables. On SQLite the write lock taken at BEGIN IMMEDIATE does it.
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
