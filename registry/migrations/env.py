"""Alembic environment: migrates the connection handed over by ``registry.db.migrate``.

Run from the alembic command line instead, it connects to ``GW_DATABASE_URL``
(the local SQLite file by default), as the services do.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import alerts.models  # noqa: F401  (registers the alert tables on Base.metadata)
import api.models  # noqa: F401  (registers the API's tables: users, API keys, commands)
import broker.models  # noqa: F401  (registers the broker's MQTT accounts)
import imagery.models  # noqa: F401  (registers imagery's tables: snapshots, dead letters, cameras)
from gridwatch.settings import get_settings
from registry.db import make_engine
from registry.models import Base


def run_migrations(connection: Connection) -> None:
    """Run the pending migrations on ``connection``, in its transaction."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_from_command_line() -> None:
    """Connect to the configured database and migrate it."""
    engine = make_engine(get_settings().sql_url)
    try:
        with engine.begin() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


handed_over = context.config.attributes.get("connection")
if handed_over is None:
    run_from_command_line()
else:
    run_migrations(handed_over)
