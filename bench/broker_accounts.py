"""Broker security at city scale: Mosquitto with a password file of N device accounts.

What a deployment pays for per-device credentials (issue 9), on the real
Mosquitto: the size of the files gridwatch writes, the time from starting the
broker to the first accepted login, how long a reload (SIGHUP, what every
issue, rotation and revocation triggers) leaves the broker answering nobody,
and the broker's memory. Each account has its own salt and hash, written by
``broker.accounts.hash_password`` and ``broker.files.write_atomically`` as
``gridwatch broker sync`` writes them.

    .venv/bin/python bench/broker_accounts.py                    # 250,000 accounts (~40 s)
    .venv/bin/python bench/broker_accounts.py --accounts 10000
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.accounts import hash_password, new_password
from broker.acl import render_acl
from broker.files import BrokerFiles, write_atomically
from stack.servers import Mosquitto

SERVICES = ["gridwatch.ingest", "gridwatch.alerts", "gridwatch.api", "gridwatch.imagery"]
RELOADS = 3
PROBE_TIMEOUT_S = 10.0
RELOAD_LOGGED = "Reloading config"


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    """An MQTT 3.1.1 CONNECT with a username and password, clean session."""

    def field(text: str) -> bytes:
        data = text.encode()
        return struct.pack("!H", len(data)) + data

    variable = field("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60)
    body = variable + field(client_id) + field(username) + field(password)
    return bytes([0x10]) + _remaining_length(len(body)) + body


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def login(port: int, username: str, password: str) -> int | None:
    """The CONNACK return code (0: accepted), or None if the broker did not answer in time."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_S) as sock:
            sock.sendall(connect_packet(f"bench-{time.monotonic_ns()}", username, password))
            answer = sock.recv(4)
            if len(answer) == 4 and answer[0] == 0x20:
                sock.sendall(b"\xe0\x00")
                return answer[3]
    except OSError:
        pass
    return None


def write_accounts(files: BrokerFiles, accounts: int) -> tuple[str, str, float]:
    """The password and ACL files for ``accounts`` devices; one device's login, and the time."""
    started = time.perf_counter()
    password = new_password()
    lines = [f"{name}:{hash_password(password)}\n" for name in SERVICES]
    lines += (f"bench-dev-{i:06d}:{hash_password(password)}\n" for i in range(accounts))
    files.directory.mkdir(parents=True, exist_ok=True)
    write_atomically(files.password_file, "".join(lines))
    write_atomically(files.acl_file, render_acl(SERVICES))
    return f"bench-dev-{accounts - 1:06d}", password, time.perf_counter() - started


def reload_stall(broker: Mosquitto, username: str, password: str) -> float:
    """Seconds from SIGHUP until a login is accepted again (the broker is single-threaded)."""
    log = broker.log_path
    reloads_before = log.read_text(errors="replace").count(RELOAD_LOGGED)
    started = time.perf_counter()
    os.kill(broker.pid or 0, signal.SIGHUP)
    # A login sent before the broker takes the signal would be served at once and
    # measure nothing: wait for its log line, written as the reload begins.
    while log.read_text(errors="replace").count(RELOAD_LOGGED) == reloads_before:
        if time.perf_counter() - started > 60:
            raise RuntimeError(f"no {RELOAD_LOGGED!r} in {log} within 60 s of SIGHUP")
        time.sleep(0.001)
    while login(broker.port, username, password) != 0:
        if time.perf_counter() - started > 60:
            raise RuntimeError("the broker did not accept a login within 60 s of SIGHUP")
    return time.perf_counter() - started


def resident_mib(pid: int) -> float:
    """The process's resident memory (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    """One row per figure, as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=250_000, help="device accounts")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gridwatch-bench-broker-"))
    root.chmod(0o711)  # mosquitto runs as its own account and must reach its state
    files = BrokerFiles(root / "mosquitto" / "auth", root / "mosquitto" / "mosquitto.pid")
    print(f"writing {args.accounts:,} device accounts ...", flush=True)
    username, password, write_s = write_accounts(files, args.accounts)
    broker = Mosquitto(root / "mosquitto", extra_config=files.config_lines(), start_timeout=120)
    try:
        started = time.perf_counter()
        with broker:
            while login(broker.port, username, password) != 0:
                if time.perf_counter() - started > 120:
                    raise RuntimeError(f"no accepted login; see {broker.log_path}")
            first_login_s = time.perf_counter() - started
            refused = login(broker.port, username, "wrong")
            stalls = [reload_stall(broker, username, password) for _ in range(RELOADS)]
            rss = resident_mib(broker.pid or 0)
        password_mib = files.password_file.stat().st_size / 2**20
        acl_lines = len(files.acl_file.read_text().splitlines())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"| what ({args.accounts:,} device accounts) | figure |")
    print("| --- | --- |")
    print(f"| password file | {password_mib:.1f} MiB |")
    print(f"| ACL file | {acl_lines} lines, whatever the number of devices |")
    print(f"| hashing and writing the files (one process) | {write_s:.1f} s |")
    print(f"| broker start to first accepted login | {first_login_s:.2f} s |")
    print(f"| wrong password | CONNACK return code {refused} |")
    reloads = ", ".join(f"{s:.2f}" for s in stalls)
    print(f"| SIGHUP to next accepted login, {RELOADS} reloads | {reloads} s "
          f"(median {statistics.median(stalls):.2f}) |")  # fmt: skip
    print(f"| broker resident memory | {rss:.0f} MiB |")


if __name__ == "__main__":
    main()
