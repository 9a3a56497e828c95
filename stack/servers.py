"""Private mosquitto, influxd and PostgreSQL servers, for ``make run`` and the tests.

Each server keeps its config, data and log under its own state directory and
listens on 127.0.0.1 only, on its own port, so it never meets a system instance.
When we are root, each runs as its Debian package's system account (mosquitto,
influxdb, postgres): PostgreSQL refuses to run as root, and the others need it
no more than PostgreSQL does.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from types import TracebackType
from typing import IO, ClassVar, Self

import httpx
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from sqlalchemy.engine import URL

LOOPBACK = "127.0.0.1"
CONF_DIR = Path(__file__).with_name("conf")
INSTALL_HINT = (
    "run `make system` (as root, or stack/install-system-packages.sh); `make test` runs it too"
)
# State paths are written into config files unquoted or in TOML strings.
_UNSAFE_PATH = re.compile(r"[\s\"'\\#$]")
_POLL_S = 0.05
_LOG_TAIL_LINES = 20


class ServerError(RuntimeError):
    """A server could not be started; the message ends with the last lines of its log."""


class MissingBinary(ServerError):
    """A server's program or system account is not installed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (another process could still take it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


def find_binary(name: str, package: str) -> str:
    """The absolute path of program ``name``; MissingBinary names its Debian package."""
    # Daemons live in sbin, which a non-root PATH often lacks.
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=search)
    if found is None:
        raise MissingBinary(f"{name} not found (Debian package {package}): {INSTALL_HINT}")
    return found


def _postgres_bindir() -> Path:
    """The bin directory of the newest PostgreSQL server installed by Debian's packages."""
    versions = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/postgres")
        if path.parent.parent.name.isdigit()
    ]
    if not versions:
        raise MissingBinary(
            f"no /usr/lib/postgresql/*/bin/postgres (Debian package postgresql): {INSTALL_HINT}"
        )
    return max(versions, key=lambda bindir: int(bindir.parent.name))


@dataclass(frozen=True, slots=True)
class _Account:
    name: str
    uid: int
    gid: int


def _account_for(name: str) -> _Account | None:
    """The account to run a server as when we are root; None: as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise MissingBinary(
            f"no system account {name!r} (its Debian package creates it): {INSTALL_HINT}"
        ) from None
    return _Account(name, entry.pw_uid, entry.pw_gid)


def _spawn(
    command: Sequence[str], account: _Account | None, cwd: Path, output: IO[bytes] | int
) -> subprocess.Popen[bytes]:
    """Start ``command`` as ``account``, stdout and stderr to ``output``."""
    return subprocess.Popen(  # noqa: S603 -- argv of absolute paths we built; no shell
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        user=account.uid if account else None,
        group=account.gid if account else None,
        # Otherwise the child keeps root's supplementary groups.
        extra_groups=[] if account else None,
        # Our owner decides when and in which order servers stop: a terminal's Ctrl-C
        # must not kill the broker before the services using it have flushed.
        start_new_session=True,
    )


def _run(
    command: Sequence[str], account: _Account | None, cwd: Path, output: IO[bytes] | int
) -> int:
    """Run ``command`` as ``account`` to completion; its exit status."""
    with _spawn(command, account, cwd, output) as process:
        return process.wait()


def _accepts_connections(port: int) -> bool:
    """True if something listens on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def _write_config(path: Path, text: str) -> None:
    """Write a config file the server's account can read, whatever our umask."""
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)


def _chown_tree(root: Path, account: _Account) -> None:
    """Give ``root`` and everything under it to ``account``."""
    os.chown(root, account.uid, account.gid)
    for parent, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.chown(Path(parent, name), account.uid, account.gid, follow_symlinks=False)


class Server(ABC):
    """A private server process: start, wait until it serves, stop; a context manager.

    Give each server a state directory of its own: when we are root, it is handed to
    the server's system account.
    """

    name: ClassVar[str]
    system_user: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, state_dir: Path, port: int | None, start_timeout: float) -> None:
        self.state_dir = state_dir.resolve()
        if _UNSAFE_PATH.search(str(self.state_dir)):
            raise ServerError(
                f"state dir {self.state_dir} goes into config files: "
                "use a path without whitespace, quotes, '#', '$' or backslashes"
            )
        self.port = port if port is not None else free_port()
        self.start_timeout = start_timeout
        self.log_path = self.state_dir / f"{self.name}.log"
        self._account = _account_for(self.system_user)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while started, else None."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True while the server's process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it serves; ServerError, with its log, if not."""
        if self._process is not None:
            raise ServerError(f"{self.name} on port {self.port} is already started")
        # Else our readiness check could be answered by that other server.
        if _accepts_connections(self.port):
            raise ServerError(f"{self.name}: port {self.port} is already in use")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        self._own(self.state_dir)
        self._check_reachable()
        self._configure()
        with self.log_path.open("ab") as log:
            self._process = _spawn(self._command(), self._account, self.state_dir, log)
        try:
            self._await_ready()
            self._on_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Stop with ``stop_signal``, SIGKILL after ``timeout`` s; a no-op if not started."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(self.stop_signal)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop, then start again on the same port with the same state."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @abstractmethod
    def _configure(self) -> None:
        """Write the config and prepare the state dir; runs before every start."""

    @abstractmethod
    def _command(self) -> list[str]:
        """The server's command line."""

    @abstractmethod
    def _ready(self) -> bool:
        """True once the server serves requests."""

    def _on_ready(self) -> None:
        """Finish setting up a server that has just become ready (by default nothing)."""
        return None

    def _own(self, path: Path) -> None:
        """Give ``path`` to the server's account (when we are root)."""
        if self._account is not None:
            _chown_tree(path, self._account)

    def _check_reachable(self) -> None:
        """Fail clearly if the server's account cannot write its state dir."""
        if self._account is None:
            return
        test = find_binary("test", "coreutils")
        if _run([test, "-w", str(self.state_dir)], self._account, Path("/"), subprocess.DEVNULL):
            raise ServerError(
                f"{self.name} runs as system user {self._account.name} (we are root), which "
                f"cannot write {self.state_dir}: a parent directory is closed to it. "
                "Use a state dir it can reach, e.g. under /tmp or /srv."
            )

    def _await_ready(self) -> None:
        """Poll until ready; ServerError if the process exits or start_timeout passes."""
        deadline = time.monotonic() + self.start_timeout
        while not self._ready():
            status = self._process.poll() if self._process else None
            if status is not None:
                raise self._failure(f"exited with status {status} while starting")
            if time.monotonic() > deadline:
                raise self._failure(f"did not become ready in {self.start_timeout:g} s")
            time.sleep(_POLL_S)

    def _failure(self, what: str) -> ServerError:
        """A ServerError saying ``what`` happened, with the end of the server's log."""
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join(lines[-_LOG_TAIL_LINES:])
        where = f"{self.name} on port {self.port}"
        return ServerError(f"{where} {what}; end of {self.log_path}:\n{tail}")


# MQTT 3.1.1 CONNECT: clean session, keep-alive 60 s, empty client id.
_MQTT_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
_MQTT_CONNACK = b"\x20\x02"
_MQTT_DISCONNECT = b"\xe0\x00"


def _answers_connack(port: int) -> bool:
    """True if an MQTT broker on ``port`` answers CONNECT with a CONNACK (accepted or not)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            sock.sendall(_MQTT_CONNECT)
            answered = sock.recv(4).startswith(_MQTT_CONNACK)
            if answered:
                sock.sendall(_MQTT_DISCONNECT)
            return answered
    except OSError:
        return False


class Mosquitto(Server):
    """A private mosquitto broker; config, persistence and log in ``state_dir``."""

    name = "mosquitto"
    system_user = "mosquitto"

    def __init__(
        self,
        state_dir: Path,
        port: int | None = None,
        *,
        extra_config: Sequence[str] = (),
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(state_dir, port, start_timeout)
        self.extra_config = tuple(extra_config)
        self.config_path = self.state_dir / "mosquitto.conf"
        self._binary = find_binary("mosquitto", "mosquitto")

    @property
    def url(self) -> str:
        """The broker's URL, ``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{LOOPBACK}:{self.port}"

    def _configure(self) -> None:
        template = Template((CONF_DIR / "mosquitto.conf").read_text(encoding="utf-8"))
        base = template.substitute(port=self.port, state_dir=self.state_dir, log_file=self.log_path)
        _write_config(self.config_path, "\n".join([base.rstrip("\n"), *self.extra_config, ""]))

    def _command(self) -> list[str]:
        return [self._binary, "-c", str(self.config_path)]

    def _ready(self) -> bool:
        return _answers_connack(self.port)


class Influxd(Server):
    """A private InfluxDB 1.x server; config, meta, data, WAL and log in ``state_dir``."""

    name = "influxd"
    system_user = "influxdb"

    def __init__(
        self,
        state_dir: Path,
        http_port: int | None = None,
        *,
        rpc_port: int | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(state_dir, http_port, start_timeout)
        self.rpc_port = rpc_port if rpc_port is not None else free_port()
        self.config_path = self.state_dir / "influxdb.toml"
        self._binary = find_binary("influxd", "influxdb")

    @property
    def url(self) -> str:
        """The HTTP API's URL, ``http://127.0.0.1:PORT``."""
        return f"http://{LOOPBACK}:{self.port}"

    def _configure(self) -> None:
        template = Template((CONF_DIR / "influxdb.toml").read_text(encoding="utf-8"))
        text = template.substitute(
            http_port=self.port, rpc_port=self.rpc_port, state_dir=self.state_dir
        )
        _write_config(self.config_path, text)

    def _command(self) -> list[str]:
        return [self._binary, "run", "-config", str(self.config_path)]

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=1.0).status_code == 204
        except httpx.HTTPError:
            return False


class Postgres(Server):
    """A private PostgreSQL cluster with a password-protected role and database for gridwatch."""

    name = "postgres"
    system_user = "postgres"
    # "Fast" shutdown. SIGTERM's "smart" mode waits for every client to disconnect,
    # forever if a test leaked a connection pool.
    stop_signal = signal.SIGINT
    superuser = "postgres"

    def __init__(
        self,
        state_dir: Path,
        port: int | None = None,
        *,
        fsync: bool = True,
        user: str = "gridwatch",
        database: str = "gridwatch",
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(state_dir, port, start_timeout)
        self.fsync = fsync
        self.user = user
        self.database = database
        self.data_dir = self.state_dir / "data"
        # Only the cluster's account may use the superuser's trusted socket.
        self.socket_dir = self.state_dir / "run"
        self._password_path = self.state_dir / "password"
        self._bindir = _postgres_bindir()
        self._pg_isready = find_binary("pg_isready", "postgresql-client")

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the gridwatch database, ``postgresql+psycopg://USER:PASS@...``."""
        return self._url(self.database)

    def create_database(self, name: str) -> str:
        """Create database ``name`` owned by the gridwatch role; its SQLAlchemy URL."""
        with self._admin() as conn:
            self._create_database(conn, name)
        return self._url(name)

    def _configure(self) -> None:
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._own(self.socket_dir)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb()

    def _initdb(self) -> None:
        command = [
            str(self._bindir / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={self.superuser}",
            "--encoding=UTF8",
            "--no-locale",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ]
        if not self.fsync:
            command.append("--no-sync")
        with self.log_path.open("ab") as log:
            status = _run(command, self._account, self.state_dir, log)
        if status:
            raise self._failure(f"initdb exited with status {status}")

    def _command(self) -> list[str]:
        settings = {"listen_addresses": LOOPBACK}
        if not self.fsync:
            # Without fsync, waiting for commits or writing full pages buys nothing.
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        command = [str(self._bindir / "postgres"), "-D", str(self.data_dir)]
        command += ["-p", str(self.port), "-k", str(self.socket_dir)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def _ready(self) -> bool:
        command = [self._pg_isready, "--quiet", "--timeout=1"]
        command += ["-h", str(self.socket_dir), "-p", str(self.port)]
        command += ["-U", self.superuser, "-d", "postgres"]
        return _run(command, None, self.state_dir, subprocess.DEVNULL) == 0

    def _on_ready(self) -> None:
        self._ensure_role_and_database()

    def _admin(self) -> psycopg.Connection[TupleRow]:
        """A superuser connection through the private socket."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=self.superuser,
            dbname="postgres",
            autocommit=True,
        )

    def _ensure_role_and_database(self) -> None:
        """Create the role and database, or reset the role's password to the stored one."""
        with self._admin() as conn:
            role_exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,)
            ).fetchone()
            verb = sql.SQL("ALTER" if role_exists else "CREATE")
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                    verb, sql.Identifier(self.user), sql.Literal(self._password())
                )
            )
            database_exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not database_exists:
                self._create_database(conn, self.database)

    def _create_database(self, conn: psycopg.Connection[TupleRow], name: str) -> None:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(self.user)
            )
        )

    def _password(self) -> str:
        """The role's password: made once per state dir, kept there in a 0600 file."""
        if not self._password_path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._password_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(secrets.token_urlsafe(24))
        return self._password_path.read_text(encoding="utf-8").strip()

    def _url(self, database: str) -> str:
        url = URL.create(
            "postgresql+psycopg",
            username=self.user,
            password=self._password(),
            host=LOOPBACK,
            port=self.port,
            database=database,
        )
        return url.render_as_string(hide_password=False)
