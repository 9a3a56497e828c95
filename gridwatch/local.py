"""``make run``: the whole stack on this machine, with the demo community simulated.

Starts private Mosquitto and influxd (state under ``GW_STATE_DIR``), prepares
storage, loads the demo community, then runs ingest, the API and the
simulator as child processes until Ctrl-C, when everything stops in order.
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
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

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


def _local_port(url: str) -> int | None:
    """The port of a loopback URL we should serve ourselves, else None."""
    parts = urlsplit(url)
    return parts.port if parts.hostname in LOOPBACK_HOSTS and parts.port else None


def _start_servers(settings: Settings, state: Path, stack: ExitStack) -> None:
    mqtt_port = _local_port(settings.mqtt_url)
    if mqtt_port is not None:
        broker = stack.enter_context(Mosquitto(state / "mosquitto", mqtt_port))
        log.info("mosquitto   %s (log %s)", broker.url, broker.log_path)
    influx_port = _local_port(settings.influx_url)
    if influx_port is not None:
        influxd = stack.enter_context(Influxd(state / "influxdb", influx_port))
        log.info("influxd     %s (log %s)", influxd.url, influxd.log_path)


def _spawn(args: list[str], logs: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    logs.mkdir(parents=True, exist_ok=True)
    out = (logs / f"{args[0]}.log").open("ab")
    command = [sys.executable, "-m", "gridwatch.cli", *args]
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
    env = {**os.environ, "GW_STATE_DIR": str(state)}
    with ExitStack() as stack:
        _start_servers(settings, state, stack)
        init_storage(settings)
        summary = import_community(settings, DEMO_COMMUNITY_FILE)
        log.info("registry    %s: demo community zjxc (%s)", settings.sql_url, summary)
        # The API first: it creates the development admin at start-up, a write that
        # SQLite refuses ("database is locked") while the alerts service is busy writing.
        api_process = _spawn(["api"], state / "logs", env)
        _wait_healthy(f"http://{settings.api_host}:{settings.api_port}/health", api_process)
        services = {
            "api": api_process,
            "ingest": _spawn(["ingest"], state / "logs", env),
            "alerts": _spawn(["alerts"], state / "logs", env),
            "imagery": _spawn(["imagery"], state / "logs", env),
            "simulate": _spawn(
                [
                    *("simulate", "-c", "zjxc", "--hours", str(hours), "--speed", str(speed)),
                    *("--scenario", str(MAKE_RUN_SCENARIO)),
                ],
                state / "logs",
                env,
            ),
        }
        api = f"http://{settings.api_host}:{settings.api_port}"
        log.info("api         %s  (docs %s/docs, health %s/health)", api, api, api)
        log.info("ingest      metrics http://127.0.0.1:%d/metrics", settings.ingest_metrics_port)
        log.info("alerts      `gridwatch alerts list` (or the API's /api/v1/alerts)")
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
