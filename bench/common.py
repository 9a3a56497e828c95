"""What the benchmarks share: private servers, the demo registry, medians."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devices.contract import Community, DeviceRecord
from registry.db import make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.importer import import_file
from registry.records import load_communities, load_devices
from stack.servers import Influxd, Mosquitto


@dataclass(frozen=True)
class Stack:
    """Private servers and a registry in one scratch directory."""

    root: Path
    mosquitto: Mosquitto
    influxd: Influxd
    sql_url: str


@contextmanager
def private_stack() -> Iterator[Stack]:
    """Mosquitto, influxd and a SQLite registry with the demo community, all torn down after."""
    root = Path(tempfile.mkdtemp(prefix="gridwatch-bench-"))
    root.chmod(0o711)  # the servers run as their own accounts and must reach their state
    sql_url = f"sqlite:///{root / 'gridwatch.db'}"
    migrate(sql_url)
    with make_sessionmaker(make_engine(sql_url))() as session:
        import_file(session, DEMO_COMMUNITY_FILE)
        session.commit()
    with Mosquitto(root / "mosquitto") as mosquitto, Influxd(root / "influxd") as influxd:
        yield Stack(root, mosquitto, influxd, sql_url)


def demo_devices(sql_url: str) -> tuple[list[Community], list[DeviceRecord]]:
    """The demo community and its devices from the registry."""
    with make_sessionmaker(make_engine(sql_url))() as session:
        return load_communities(session), load_devices(session)


def median_of(values: list[float]) -> float:
    """The median (the figure reported: this shared machine is noisy)."""
    return statistics.median(values)
