"""Messages per second one simulator process publishes to a local Mosquitto.

The demo community (342 devices, one MQTT connection each) replays simulated
hours flat out; the rate counts messages confirmed by the broker (QoS 1) or
written to the socket (QoS 0), from the first publish to the last confirmation.
"""

from __future__ import annotations

import threading
import time

from bench.common import Stack, demo_devices
from broker.connection import BrokerAddress
from gridwatch.clock import SimulatedClock, WallClock
from simulators.engine import Simulation
from simulators.fleet import Fleet


def measure(stack: Stack, qos: int, hours: float) -> tuple[int, float]:
    """Publish ``hours`` of the demo community at ``qos``; return (messages, seconds)."""
    communities, devices = demo_devices(stack.sql_url)
    fleet = Fleet(BrokerAddress.from_url(stack.mosquitto.url), qos=qos)
    start = WallClock().now_ms() - int(hours * 3_600_000)
    simulation = Simulation(
        communities, devices, clock=SimulatedClock(start, 0), seed=1, transport=fleet
    )
    for d in devices:
        fleet.add(d.device_id, d.community, d.kind)
    fleet.wait_connected()
    began = time.perf_counter()
    simulation.run(start + int(hours * 3_600_000), threading.Event())
    fleet.flush(300)
    elapsed = time.perf_counter() - began
    fleet.close()
    return simulation.report.total, elapsed
