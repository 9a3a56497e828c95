"""What the alert tests share: a fresh database (SQLite or PostgreSQL) and the HTTP stand-ins."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from registry.db import make_engine, migrate

DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of the test's own (``request.param``: sqlite or postgresql)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'alerts.db'}"
        migrate(url)
        yield url
        return
    server = request.getfixturevalue("postgres")
    name = f"alerts_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name)
    migrate(url)
    yield url
    admin = make_engine(server.url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
