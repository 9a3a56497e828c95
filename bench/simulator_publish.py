"""Messages per second one simulator process publishes to a local Mosquitto.

The demo community (342 devices, one MQTT connection each, with its last will)
replays simulated hours flat out; the rate counts messages confirmed by the
broker (QoS 1) or handed to the kernel (QoS 0), from the first publish to the
last confirmation. Replaying 24 hours the same way gives the wall time a
simulated day of the community takes. The simulator's own CPU time gives a
second rate, per CPU second, which other work on this shared machine sways less.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

from bench.common import Stack, demo_devices
from broker.address import BrokerAddress
from gridwatch.clock import SimulatedClock, WallClock
from simulators.engine import Simulation
from simulators.fleet import Fleet


class Run(NamedTuple):
    """One replay: messages published, wall seconds, and the simulator's CPU seconds."""

    messages: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Messages per wall second."""
        return self.messages / self.seconds

    @property
    def cpu_rate(self) -> float:
        """Messages per CPU second of the simulator process."""
        return self.messages / self.cpu_seconds


def measure(stack: Stack, qos: int, hours: float) -> Run:
    """Publish ``hours`` of the demo community flat out at ``qos``."""
    communities, devices = demo_devices(stack.sql_url)
    fleet = Fleet(BrokerAddress.from_url(stack.mosquitto.url), qos=qos)
    start = WallClock().now_ms() - int(hours * 3_600_000)
    simulation = Simulation(
        communities, devices, clock=SimulatedClock(start, 0), seed=1, transport=fleet
    )
    for d in devices:
        fleet.add(d.device_id, d.community, d.kind)
    fleet.wait_connected()
    began, cpu = time.perf_counter(), time.process_time()
    simulation.run(start + int(hours * 3_600_000), threading.Event())
    fleet.flush(300)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    fleet.close()
    return Run(simulation.report.total, elapsed, cpu)
