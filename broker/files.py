"""Mosquitto's password and ACL files, written from SQL, and the reload that applies them.

The files are replaced atomically (a new file renamed over the old), so the
broker never reads half of one. They belong to the owner of their directory,
mode 0640: when we are root, that is the broker's system account, which
must read them after it dropped root. SIGHUP makes Mosquitto 2.0 re-read both
and check every connected client again: a client whose account is gone is
disconnected at once (tests/test_broker_security.py proves it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from broker.acl import render_acl
from broker.credentials import active
from broker.models import AccountKind

log = logging.getLogger("gridwatch.broker")
FILE_MODE = 0o640


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where the broker's password and ACL files are, and the pid file of the broker to reload."""

    directory: Path
    pid_file: Path | None = None

    @property
    def password_file(self) -> Path:
        """Mosquitto's ``password_file``."""
        return self.directory / "passwords"

    @property
    def acl_file(self) -> Path:
        """Mosquitto's ``acl_file``."""
        return self.directory / "acl"

    def config_lines(self) -> list[str]:
        """The Mosquitto options that turn authentication and these files on."""
        lines = [
            "allow_anonymous false",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
        ]
        return [*lines, f"pid_file {self.pid_file}"] if self.pid_file else lines


@dataclass(frozen=True, slots=True)
class Synced:
    """What a sync wrote, and whether a running broker was told to reload."""

    accounts: int
    services: int
    reloaded: bool


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename, owned like its directory, mode 0640."""
    owner = path.parent.stat()
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), FILE_MODE)
            if os.geteuid() == 0:
                os.fchown(out.fileno(), owner.st_uid, owner.st_gid)
            os.fsync(out.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_files(session: Session, files: BrokerFiles) -> Synced:
    """Render the password and ACL files from the active accounts in SQL."""
    rows = active(session)
    services = [row.username for row in rows if row.kind == AccountKind.SERVICE]
    files.directory.mkdir(parents=True, exist_ok=True)
    write_atomically(
        files.password_file, "".join(f"{r.username}:{r.password_hash}\n" for r in rows)
    )
    write_atomically(files.acl_file, render_acl(services))
    return Synced(accounts=len(rows), services=len(services), reloaded=False)


def reload_broker(pid_file: Path | None) -> bool:
    """SIGHUP the broker whose pid is in ``pid_file``; False if none runs there."""
    if pid_file is None or not pid_file.exists():
        return False  # no broker here: it reloads itself (compose: run.sh)
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
        # A pid file left by a broker that died may name another process by now.
        program = Path(f"/proc/{pid}/comm").read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        log.warning("no broker runs with the pid in %s: nothing reloaded", pid_file)
        return False
    if program != "mosquitto":
        log.warning("pid %d of %s is %s, not mosquitto: nothing reloaded", pid, pid_file, program)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)
        return True
    return False


def sync(session: Session, files: BrokerFiles) -> Synced:
    """Write the files, then make the broker apply them (when its pid file is known)."""
    written = write_files(session, files)
    reloaded = reload_broker(files.pid_file)
    log.info(
        "broker files: %d accounts (%d services) in %s%s",
        written.accounts,
        written.services,
        files.directory,
        ", broker reloaded" if reloaded else "",
    )
    return Synced(written.accounts, written.services, reloaded)
