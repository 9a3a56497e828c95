"""``make run``: the whole stack on this machine, with the demo community simulated.

Starts private Mosquitto and influxd (state under ``GW_STATE_DIR``), prepares
storage, loads the demo community, then runs ingest, the API and the
simulator as child processes until Ctrl-C, when everything stops in order.

Broker security is on (``GW_BROKER_SECURITY``): every service and device gets a
fresh password at each start, the broker allows no anonymous client, each
service logs in with its own account and the simulator logs each device in as
itself. The passwords go to ``GW_STATE_DIR/broker-credentials.json`` (mode
0600), for development only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from broker.acl import SIMULATOR
from broker.tls import make_dev_ca
from gridwatch.security import LOCAL_CREDENTIALS, broker_files, local_accounts
from gridwatch.services import import_community, init_storage
from gridwatch.settings import Settings
from registry.demo import DEMO_COMMUNITY_FILE
from simulators.scenario import SCENARIOS_DIR
from stack.servers import Influxd, Mosquitto

log = logging.getLogger("gridwatch.run")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
STATUS_EVERY_S = 10.0
# A few faults in the replayed day, so that alerts and dashboards have something to show.
MAKE_RUN_SCENARIO = SCENARIOS_DIR / "make_run.yaml"
DEMO_COMMUNITY = "zjxc"


def _local_port(url: str) -> int | None:
    """The port of a loopback URL we should serve ourselves, else None."""
    parts = urlsplit(url)
    return parts.port if parts.hostname in LOOPBACK_HOSTS and parts.port else None


def _start_influxd(settings: Settings, state: Path, stack: ExitStack) -> None:
    influx_port = _local_port(settings.influx_url)
    if influx_port is not None:
        influxd = stack.enter_context(Influxd(state / "influxdb", influx_port))
        log.info("influxd     %s (log %s)", influxd.url, influxd.log_path)


def _start_mosquitto(settings: Settings, stack: ExitStack) -> dict[str, str]:
    """Start the local broker (secured unless GW_BROKER_SECURITY=false); the passwords issued."""
    mqtt_port = _local_port(settings.mqtt_url)
    if mqtt_port is None:
        return {}
    passwords, config = {}, []
    if settings.broker_security:
        passwords = local_accounts(settings, [DEMO_COMMUNITY])
        config = broker_files(settings).config_lines()
        if settings.broker_tls_port:
            certs = make_dev_ca(settings.broker_state / "tls", ["localhost", "127.0.0.1"])
            config += certs.listener_lines(settings.broker_tls_port, "127.0.0.1")
            log.info("mqtts       port %d, CA %s", settings.broker_tls_port, certs.ca_cert)
    broker = stack.enter_context(Mosquitto(settings.broker_state, mqtt_port, extra_config=config))
    security = f"{len(passwords)} accounts, no anonymous" if passwords else "anonymous"
    log.info("mosquitto   %s, %s (log %s)", broker.url, security, broker.log_path)
    return passwords


def _as_account(url: str, username: str, passwords: dict[str, str]) -> str:
    """``url`` logged in as ``username`` (unchanged when security is off)."""
    if username not in passwords:
        return url
    parts = urlsplit(url)
    netloc = f"{username}:{passwords[username]}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _spawn(
    args: list[str], logs: Path, env: dict[str, str], account: str, passwords: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Run ``gridwatch ARGS``, logged in to the broker as ``account``."""
    logs.mkdir(parents=True, exist_ok=True)
    out = (logs / f"{args[0]}.log").open("ab")
    command = [sys.executable, "-m", "gridwatch.cli", *args]
    env = {**env, "GW_MQTT_URL": _as_account(env["GW_MQTT_URL"], account, passwords)}
    return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)  # noqa: S603


def _stop(name: str, process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in 30 s; killing it", name)
            process.kill()
            process.wait()


def _ingest_status(port: int) -> str:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return "ingest metrics not reachable yet"
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return (
        f"received {totals.get('gridwatch_ingest_received_total', 0):.0f}, "
        f"stored {totals.get('gridwatch_ingest_written_total', 0):.0f}, "
        f"rejected {totals.get('gridwatch_ingest_rejected_total', 0):.0f}, "
        f"in memory {totals.get('gridwatch_ingest_backlog', 0):.0f}"
    )


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Wait until a service answers its health check (any answer: it is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g} s: see the service's log")


def run_local_stack(
    settings: Settings, *, hours: float, speed: float, stop: threading.Event
) -> None:
    """Run everything until ``stop`` is set (Ctrl-C) or a service dies."""
    state = settings.state_dir.resolve()
    env = {**os.environ, "GW_STATE_DIR": str(state), "GW_MQTT_URL": settings.mqtt_url}
    logs = state / "logs"
    with ExitStack() as stack:
        _start_influxd(settings, state, stack)
        init_storage(settings)
        summary = import_community(settings, DEMO_COMMUNITY_FILE)
        log.info("registry    %s: demo community zjxc (%s)", settings.public_sql_url, summary)
        # The registry first: the broker starts with the accounts issued from it.
        passwords = _start_mosquitto(settings, stack)
        simulate = ["simulate", "-c", DEMO_COMMUNITY, "--hours", str(hours), "--speed", str(speed)]
        simulate += ["--scenario", str(MAKE_RUN_SCENARIO)]
        if passwords:
            simulate += ["--credentials", str(state / LOCAL_CREDENTIALS)]
        # The API first: it creates the development admin at start-up, a write that
        # SQLite refuses ("database is locked") while the alerts service is busy writing.
        api_process = _spawn(["api"], logs, env, "gridwatch.api", passwords)
        _wait_healthy(f"http://{settings.api_host}:{settings.api_port}/health", api_process)
        services = {
            "api": api_process,
            "ingest": _spawn(["ingest"], logs, env, "gridwatch.ingest", passwords),
            "alerts": _spawn(["alerts"], logs, env, "gridwatch.alerts", passwords),
            "imagery": _spawn(["imagery"], logs, env, "gridwatch.imagery", passwords),
            "simulate": _spawn(simulate, logs, env, SIMULATOR, passwords),
        }
        api = f"http://{settings.api_host}:{settings.api_port}"
        log.info("api         %s  (docs %s/docs, health %s/health)", api, api, api)
        log.info("ingest      metrics http://127.0.0.1:%d/metrics", settings.ingest_metrics_port)
        log.info(
            "alerts      `gridwatch alerts list` (or the API's /api/v1/alerts), metrics "
            "http://127.0.0.1:%d/metrics",
            settings.alerts_metrics_port,
        )
        log.info(
            "simulating  zjxc: the last %g h at %gx with the faults of %s, then live",
            hours,
            speed,
            MAKE_RUN_SCENARIO.name,
        )
        log.info("logs        %s/logs/ — press Ctrl-C to stop everything", state)
        try:
            _supervise(services, settings, stop)
        finally:
            # Producers first, so the consumers can finish what they hold.
            for name in ("simulate", "ingest", "alerts", "imagery", "api"):
                _stop(name, services[name])
            log.info("services stopped; stopping servers")
    log.info("stopped")


def _supervise(
    services: dict[str, subprocess.Popen[bytes]], settings: Settings, stop: threading.Event
) -> None:
    next_status = time.monotonic() + STATUS_EVERY_S
    while not stop.wait(0.5):
        for name, process in services.items():
            if process.poll() is not None:
                log.error("%s exited with status %s; stopping", name, process.returncode)
                return
        if time.monotonic() >= next_status and settings.ingest_metrics_port:
            next_status += STATUS_EVERY_S
            log.info("ingest: %s", _ingest_status(settings.ingest_metrics_port))
