"""Broker security wired to the settings: accounts in the registry, files for the broker.

The CLI (``gridwatch broker``), the API (device creation) and ``make run`` call
these: each changes accounts in SQL, then writes the broker's files and makes
the broker reload them, so a change takes effect at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
from sqlalchemy.orm import Session, sessionmaker

from broker.acl import PRODUCTION_SERVICES, SIMULATOR
from broker.credentials import Issued, accounts, devices_of, issue, issue_many, revoke
from broker.files import BrokerFiles, Synced, sync
from broker.models import MqttAccount
from gridwatch.clock import WallClock
from gridwatch.settings import Settings
from registry.db import make_engine, make_sessionmaker, writing

log = logging.getLogger("gridwatch.broker")
# make run keeps the passwords its simulator and services log in with here (mode 0600).
LOCAL_CREDENTIALS = "broker-credentials.json"


@contextmanager
def _sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on a registry engine of its own (the CLI's), disposed after."""
    engine = make_engine(settings.sql_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    """A session for reading, on a registry engine of its own."""
    with _sessions(settings) as sessions, sessions() as session:
        yield session


def broker_files(settings: Settings) -> BrokerFiles:
    """Where this installation's broker files are, and which broker to reload."""
    return BrokerFiles(settings.broker_auth_path, settings.broker_pid_path)


def sync_broker(settings: Settings) -> Synced:
    """Write the broker's files from SQL and reload the broker."""
    with _session(settings) as session:
        return sync(session, broker_files(settings))


def issue_and_sync(settings: Settings, usernames: Iterable[str]) -> list[Issued]:
    """Issue (or rotate) accounts, commit, then sync the broker."""
    with _sessions(settings) as sessions:
        # Issuing reads the device rows before it writes, while the services may be
        # writing the same SQLite file: writing() waits for them.
        with writing(sessions) as session:
            issued = issue_many(session, usernames, WallClock().now_ms())
        # After the commit: the files show what is committed, and writing them does not
        # keep the other writers waiting.
        with sessions() as session:
            sync(session, broker_files(settings))
    return issued


def revoke_and_sync(settings: Settings, username: str) -> Synced:
    """Revoke an account, commit, then sync the broker (which disconnects it)."""
    with _sessions(settings) as sessions:
        with writing(sessions) as session:
            revoke(session, username, WallClock().now_ms())
        with sessions() as session:
            return sync(session, broker_files(settings))


def community_devices(settings: Settings, community: str) -> list[str]:
    """The device ids of a community."""
    with _session(settings) as session:
        return devices_of(session, community)


def save_secrets(path: Path, issued: Iterable[Issued]) -> None:
    """Write ``{username: password}`` to a new file only we can read (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(msgspec.json.encode({i.username: i.password for i in issued}))


def local_accounts(settings: Settings, communities: Iterable[str]) -> dict[str, str]:
    """make run: fresh passwords for every service and device, saved for the local processes."""
    devices = [d for c in communities for d in community_devices(settings, c)]
    issued = issue_and_sync(settings, [*PRODUCTION_SERVICES, SIMULATOR, *devices])
    save_secrets(settings.state_dir.resolve() / LOCAL_CREDENTIALS, issued)
    return {i.username: i.password for i in issued}


def listed(settings: Settings) -> list[MqttAccount]:
    """Every account in the registry."""
    with _session(settings) as session:
        return accounts(session)


def apply_accounts(sessions: sessionmaker[Session], settings: Settings) -> bool:
    """Sync the broker after a request changed accounts (on the caller's registry sessions).

    A failure is logged, not raised: the change is committed either way, and
    ``gridwatch broker sync`` applies it later.
    """
    try:
        with sessions() as session:
            sync(session, broker_files(settings))
    except OSError as exc:
        log.error("broker files not written (%s): run `gridwatch broker sync`", exc)
        return False
    return True


def set_service_passwords(settings: Settings) -> Synced | None:
    """Give the service accounts the passwords the deployment chose, and write the files.

    None when no GW_BROKER_<SERVICE>_PASSWORD is set (nothing to do).
    """
    given = settings.service_passwords()
    if not given:
        return None
    with _sessions(settings) as sessions:
        with writing(sessions) as session:
            for name, password in given.items():
                issue(session, name, WallClock().now_ms(), password)
        with sessions() as session:
            return sync(session, broker_files(settings))
