"""Alembic migrations of the registry; applied by ``registry.db.migrate``."""
