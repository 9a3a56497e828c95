"""Running simulations for ``gridwatch simulate``: one process, or several, with progress.

A run replays the window ``[start_ms, until_ms]`` (which ends no later than
now) at ``speed``, then, if asked, carries on in real time. Several processes
split the communities between them; each device's stream depends only on the
seed and its own id, so the split changes nothing but the interleaving.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import TypeAlias

import msgspec
from sqlalchemy import func, select

from broker.address import BrokerAddress
from devices.contract import Channel
from gridwatch.clock import SimulatedClock, WallClock
from registry.db import make_engine, make_sessionmaker, migrate
from registry.models import Device
from registry.records import load_communities, load_devices
from simulators.city import connections_needed, register_city
from simulators.engine import Report, Simulation
from simulators.fleet import Fleet
from simulators.scenario import load_scenario

log = logging.getLogger("gridwatch.simulate")

# A progress line this often while replaying, and less often once live (a log line a minute).
PROGRESS_EVERY_S, LIVE_PROGRESS_EVERY_S = 5.0, 60.0
# One Mosquitto here holds at most about 20,000 connections (its file limit, ulimit -n).
MAX_CONNECTIONS = 18_000


@dataclass(frozen=True)
class Plan:
    """What to simulate, over which window, how fast, and over which connections."""

    broker_url: str
    sql_url: str
    communities: tuple[str, ...]
    start_ms: int
    until_ms: int  # the end of the replay, no later than now
    speed: float  # acceleration of the replay; 0 = as fast as possible
    follow: bool  # carry on in real time after the replay
    seed: int
    qos: int
    scenario: Path | None = None
    devices_per_connection: int = 1
    credentials: Path | None = None  # JSON {username: password}: devices log in as themselves


@dataclass
class Progress:
    """What the run has done so far, over all its processes, and how to say it."""

    plan: Plan
    workers: int = 1
    reports: dict[int, Report] = field(default_factory=dict)
    began: float = field(default_factory=time.monotonic)
    _mark: tuple[float, int] = field(init=False)  # when the last line was said, and the total

    def __post_init__(self) -> None:
        self._mark = (self.began, 0)

    def update(self, worker: int, report: Report) -> None:
        """Take a worker's latest report."""
        self.reports[worker] = report

    @property
    def total(self) -> Report:
        """Every worker's counts together; simulated time is the slowest worker's."""
        combined = Report(started_ms=self.plan.start_ms, reached_ms=self.plan.start_ms)
        for report in self.reports.values():
            combined.counts.update(report.counts)
            combined.devices.update(report.devices)
        reached = [r.reached_ms for r in self.reports.values()]
        if len(reached) == self.workers:  # until every worker reported, the slowest is unknown
            combined.reached_ms = min(reached)
        return combined

    def due(self) -> bool:
        """Time for a line: every few seconds while replaying, every minute live."""
        live = self.total.reached_ms >= self.plan.until_ms
        every = LIVE_PROGRESS_EVERY_S if live else PROGRESS_EVERY_S
        return time.monotonic() - self._mark[0] >= every

    def line(self) -> str:
        """``simulated up to …, N messages, R msg/s`` (the rate since the last line)."""
        total = self.total
        now = time.monotonic()
        then, before = self._mark
        rate = (total.total - before) / max(1e-3, now - then)
        self._mark = (now, total.total)
        window = max(1, self.plan.until_ms - self.plan.start_ms)
        done = min(100.0, 100 * (total.reached_ms - self.plan.start_ms) / window)
        where = f"{done:.0f}% of the replay" if done < 100 else "live"
        return (
            f"simulated up to {iso(total.reached_ms)} ({where}): "
            f"{total.total:,} messages, {rate:,.0f} msg/s"
        )


def iso(ms: int) -> str:
    """A timestamp for people, in UTC."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def summary(report: Report) -> str:
    """What a run published, a line per kind."""
    shown = (Channel.TELEMETRY, Channel.EVENT, Channel.STATUS, Channel.CMD_ACK, Channel.SNAPSHOT)
    channels = [c.value for c in shown]
    head = f"{'kind':<14}{'devices':>9}" + "".join(f"{c:>11}" for c in channels) + f"{'total':>11}"
    lines = [head]
    for kind in sorted(report.devices):
        counts = [report.counts[(kind, c)] for c in channels]
        total = report.by_kind()[kind]
        row = "".join(f"{n:>11,}" for n in counts)
        lines.append(f"{kind:<14}{report.devices[kind]:>9,}{row}{total:>11,}")
    blank = " " * 11 * len(channels)
    lines.append(f"{'all':<14}{sum(report.devices.values()):>9,}{blank}{report.total:>11,}")
    return "\n".join(lines)


# --- one process ---------------------------------------------------------------------------


def load_credentials(path: Path | None) -> dict[str, str]:
    """The ``{username: password}`` file that ``make run`` saves for the simulator, if any."""
    if path is None:
        return {}
    return msgspec.json.decode(path.read_bytes(), type=dict[str, str])


def run(plan: Plan, stop: threading.Event, progress: Callable[[Report], None]) -> Report:
    """Simulate the plan's communities in this process until the replay ends (or ``stop``)."""
    sessions = make_sessionmaker(make_engine(plan.sql_url))
    with sessions() as session:
        known = {c.id: c for c in load_communities(session)}
        records = [d for c in plan.communities for d in load_devices(session, c)]
    clock = SimulatedClock(plan.start_ms, plan.speed)
    fleet = Fleet(
        BrokerAddress.from_url(plan.broker_url),
        qos=plan.qos,
        devices_per_connection=plan.devices_per_connection,
        credentials=load_credentials(plan.credentials),
    )
    communities = [known[c] for c in plan.communities]
    simulation = Simulation(communities, records, clock=clock, seed=plan.seed, transport=fleet)
    if plan.scenario is not None:
        scenario = load_scenario(plan.scenario)
        if scenario.community in plan.communities:
            scenario.apply(simulation)
    fleet.on_command = simulation.queue_command
    for record in records:
        fleet.add(record.device_id, record.community, record.kind)
    fleet.wait_connected(timeout=30 + len(records) / 1000)
    simulation.announce(online=True)
    simulation.run(plan.until_ms, stop, progress)
    if plan.follow and not stop.is_set():
        log.info("replay done; carrying on in real time")
        simulation.follow_live(stop, progress)
    simulation.announce(online=False)
    fleet.flush()
    fleet.close()
    return simulation.report


def run_here(plan: Plan, stop: threading.Event, say: Callable[[str], None]) -> Report:
    """Run in this process, saying how it goes every few seconds."""
    progress = Progress(plan)

    def report(r: Report) -> None:
        progress.update(0, r)
        if progress.due():
            say(progress.line())

    return run(plan, stop, report)


# --- several processes -----------------------------------------------------------------------


def split(communities: Sequence[str], parts: int) -> list[tuple[str, ...]]:
    """Deal the communities out to ``parts`` processes, round robin."""
    return [tuple(communities[i::parts]) for i in range(parts) if communities[i::parts]]


Updates: TypeAlias = "multiprocessing.Queue[tuple[int, Report, bool]]"


def _worker(plan: Plan, index: int, out: Updates, stop: ProcessEvent) -> None:
    """A child process: its share of the plan, reporting to the parent through ``out``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker {index}: %(message)s")
    last = 0.0

    def report(r: Report) -> None:
        nonlocal last
        if time.monotonic() - last >= 1.0:
            last = time.monotonic()
            out.put((index, r, False))

    out.put((index, run(plan, _bridged(stop), report), True))


def _bridged(flag: ProcessEvent) -> threading.Event:
    """A thread event set when the parent sets the process event (what the loop waits on)."""
    local = threading.Event()

    def watch() -> None:
        flag.wait()
        local.set()

    threading.Thread(target=watch, daemon=True).start()
    return local


def run_parallel(
    plan: Plan, processes: int, stop: threading.Event, say: Callable[[str], None]
) -> Report:
    """Split the communities over ``processes`` processes; combine their reports."""
    context = multiprocessing.get_context("spawn")
    out: Updates = context.Queue()
    child_stop = context.Event()
    shares = split(plan.communities, processes)
    workers = [
        context.Process(
            target=_worker, args=(replace(plan, communities=share), i, out, child_stop), daemon=True
        )
        for i, share in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    progress, finished = Progress(plan, len(workers)), set[int]()
    while len(finished) < len(workers):
        if stop.is_set():
            child_stop.set()
        try:
            index, report, done = out.get(timeout=0.5)
        except queue.Empty:
            if any(not w.is_alive() and w.exitcode for w in workers):
                child_stop.set()
                raise RuntimeError("a simulator process failed; see its log above") from None
            continue
        progress.update(index, report)
        if done:
            finished.add(index)
        if progress.due():
            say(progress.line())
    for worker in workers:
        worker.join()
    return progress.total


def default_processes(devices: int, communities: int, cpus: int) -> int:
    """One process for a community or a few; more when there is a city to share out."""
    return 1 if devices < 5_000 else max(1, min(cpus, communities))


def device_count(sql_url: str, communities: Sequence[str]) -> int:
    """How many devices these communities have in the registry."""
    query = select(func.count()).where(Device.community_id.in_(communities))
    with make_sessionmaker(make_engine(sql_url))() as session:
        return int(session.execute(query).scalar_one())


# --- planning --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What ``gridwatch simulate`` was asked for (None: decide from the rest)."""

    communities: tuple[str, ...] = ()
    city: int = 0  # generate (and register) this many communities from the demo's shape
    hours: float | None = None  # replay this many hours up to now first
    speed: float = 600.0
    follow: bool = True
    seed: int | None = None
    qos: int = 1
    scenario: Path | None = None
    processes: int | None = None
    devices_per_connection: int | None = None
    max_connections: int = MAX_CONNECTIONS
    credentials: Path | None = None


def prepare(request: Request, sql_url: str, broker_url: str, now_ms: int) -> tuple[Plan, int]:
    """The plan for a request, and how many processes to run it in; SystemExit if impossible."""
    sessions = make_sessionmaker(make_engine(sql_url))
    communities = list(request.communities)
    if request.city:
        migrate(sql_url)
        communities += [c for c in register_city(sessions, request.city) if c not in communities]
    if request.credentials is not None and not request.credentials.is_file():
        raise SystemExit(f"no credentials file {request.credentials}")
    scenario = load_scenario(request.scenario) if request.scenario else None
    if scenario is not None and not communities:
        communities = [scenario.community]
    with sessions() as session:
        known = {c.id: c for c in load_communities(session)}
    missing = sorted(set(communities) - set(known))
    if missing or not communities:
        raise SystemExit(
            f"unknown communities {missing}: import them first (gridwatch registry import)"
            if missing
            else "name the communities to simulate (-c), a scenario, or --communities N"
        )
    start, until = now_ms, now_ms
    if request.hours is not None:
        start = now_ms - int(request.hours * 3_600_000) // 60_000 * 60_000
    elif scenario is not None:
        if scenario.community not in communities:
            raise SystemExit(f"the scenario is about {scenario.community}, which is not simulated")
        start, end = scenario.window(now_ms, known[scenario.community])
        until = now_ms if request.follow else end
    devices = device_count(sql_url, communities)
    per_connection = request.devices_per_connection or connections_needed(
        devices, request.max_connections
    )
    plan = Plan(
        broker_url=broker_url,
        sql_url=sql_url,
        communities=tuple(communities),
        start_ms=start,
        until_ms=until,
        speed=request.speed,
        follow=request.follow,
        seed=request.seed if request.seed is not None else scenario.seed if scenario else 1,
        qos=request.qos,
        scenario=request.scenario,
        devices_per_connection=per_connection,
        credentials=request.credentials,
    )
    cpus = len(os.sched_getaffinity(0))
    processes = request.processes or default_processes(devices, len(communities), cpus)
    log.info(
        "simulating %s devices of %d communities from %s to %s at %gx%s, %d per connection, "
        "in %d process(es)",
        f"{devices:,}",
        len(communities),
        iso(start),
        iso(until),
        request.speed,
        ", then live" if request.follow else "",
        per_connection,
        processes,
    )
    return plan, processes


def simulate(request: Request, sql_url: str, broker_url: str, stop: threading.Event) -> Report:
    """Plan a request and run it, in one process or several, with a progress line."""
    plan, processes = prepare(request, sql_url, broker_url, WallClock().now_ms())
    if processes == 1:
        return run_here(plan, stop, log.info)
    return run_parallel(plan, processes, stop, log.info)
