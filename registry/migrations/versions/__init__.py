"""Alembic revisions of the registry, one file each (Alembic skips this file)."""
