"""Settings as the services log them: addresses without their passwords."""

from __future__ import annotations

from pathlib import Path

from gridwatch.settings import Settings


def test_logged_addresses_hide_their_passwords() -> None:
    settings = Settings(
        mqtt_url="mqtt://gridwatch.alerts:s3cret@broker:1883",
        database_url="postgresql+psycopg://gridwatch:s3cret@db:5432/gridwatch",
    )
    assert settings.public_mqtt_url == "mqtt://gridwatch.alerts:***@broker:1883"
    assert settings.public_sql_url == "postgresql+psycopg://gridwatch:***@db:5432/gridwatch"
    assert "s3cret" not in settings.public_mqtt_url + settings.public_sql_url


def test_the_default_database_is_a_sqlite_file_in_the_state_dir(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert settings.public_sql_url == settings.sql_url == f"sqlite:///{tmp_path / 'gridwatch.db'}"
