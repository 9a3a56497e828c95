"""What the API holds open for its lifetime: SQL, InfluxDB, the broker, and its caches."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio.to_thread
import paho.mqtt.client as mqtt
from anyio import CapacityLimiter
from sqlalchemy.orm import Session, sessionmaker

from alerts.sql import Database
from api.access import GRID_MAP_TTL_S, GridMaps, Principal
from api.dispatch import Dispatcher
from api.influxdb import InfluxReader
from api.live import ALERTS_FILTER, STATUS_FILTER, LiveHub
from api.metrics import ApiMetrics
from api.security import Tokens
from broker.address import BrokerAddress
from broker.connection import make_client
from devices.contract import DeviceRecord
from gridwatch.clock import Clock, WallClock
from gridwatch.settings import Settings
from imagery.links import SnapshotLinks
from registry.db import make_engine, make_sessionmaker

# A credential's user, role and grids are re-read from SQL after this long, so a
# deactivated user or a revoked key stops working within it (at once on this replica).
PRINCIPAL_TTL_S = 10.0

# An alert list page, or a device's latest state, is served again for this long:
# screens poll the same ones, and each would otherwise cost a query (SQL or InfluxDB)
# and its JSON. An alert event on the broker, or a change made through this API,
# forgets the alert pages at once, a device status message the latest states.
ANSWER_TTL_S = 1.0
CACHED_PAGE_BYTES = 65_536

# Threads reading PostgreSQL for async routes at once: fewer than its connection
# pool holds (5), so that no read waits for a connection, or opens one only to
# close it again.
SQL_READERS = 4

V = TypeVar("V")
T = TypeVar("T")


class TtlCache(Generic[V]):
    """A small thread-safe map whose entries expire after ``ttl_s``."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[str, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        """The value, unless absent or expired."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > self._ttl_s:
            return None
        return entry[1]

    def put(self, key: str, value: V) -> None:
        """Remember ``value``; when full, start afresh rather than grow."""
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key] = (time.monotonic(), value)

    def clear(self) -> None:
        """Forget everything (a user or key changed)."""
        with self._lock:
            self._entries.clear()


@dataclass(frozen=True)
class Answers:
    """Encoded answers of the routes screens poll, kept for ``ANSWER_TTL_S``."""

    # By the list's parameters (api/routes/alerts.py); pages up to CACHED_PAGE_BYTES, so
    # that a client asking for many large pages holds at most 256 × 64 KiB here.
    alert_pages: TtlCache[bytes]
    latest: TtlCache[bytes]  # by device id (api/routes/devices.py)

    @classmethod
    def make(cls) -> Answers:
        """Empty caches."""
        return cls(TtlCache(ANSWER_TTL_S, max_entries=256), TtlCache(ANSWER_TTL_S))


class BrokerLink:
    """A long-lived broker connection (clean session): commands out, live events in.

    Its state is the API's view of broker health.
    """

    def __init__(self, address: BrokerAddress, on_message: LiveHub, answers: Answers) -> None:
        # An empty client id: paho makes a random one, so replicas never collide.
        self.client: mqtt.Client = make_client(address, "")
        self.connected = threading.Event()
        self._hub = on_message
        self._answers = answers
        self.client.on_connect = self._connected
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.on_message = self._message
        self.client.connect_async(address.host, address.port, keepalive=30)
        self.client.loop_start()

    def _connected(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe([(ALERTS_FILTER, 0), (STATUS_FILTER, 0)])
        self.connected.set()

    def _message(self, _client: mqtt.Client, _data: object, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/alerts"):
            self._answers.alert_pages.clear()
        elif not message.retain:
            self._answers.latest.clear()
        self._hub.on_message(message.topic, bytes(message.payload), bool(message.retain))

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class AppState:
    """Connections and caches shared by every request."""

    settings: Settings
    clock: Clock
    sessions: sessionmaker[Session]
    database: Database
    influx: InfluxReader
    tokens: Tokens
    links: SnapshotLinks
    metrics: ApiMetrics
    principals: TtlCache[Principal]
    # Registered devices by id, trusted as long as the grid maps (a miss is read from SQL).
    devices: TtlCache[DeviceRecord]
    grid_maps: GridMaps
    answers: Answers
    sql_in_process: bool
    sql_readers: CapacityLimiter
    live: LiveHub
    broker: BrokerLink
    dispatcher: Dispatcher

    @classmethod
    def open(cls, settings: Settings, metrics: ApiMetrics) -> AppState:
        """Open the connections named by the settings (refuses missing production secrets)."""
        tokens = Tokens.from_settings(settings)
        links = SnapshotLinks.from_settings(settings)
        engine = make_engine(settings.sql_url)
        sessions = make_sessionmaker(engine)
        database = Database(sessions)
        clock = WallClock()
        grid_maps = GridMaps()
        live = LiveHub(sessions, grid_maps)
        address = BrokerAddress.from_url(settings.mqtt_url)
        answers = Answers.make()
        broker = BrokerLink(address, live, answers)
        dispatcher = Dispatcher(
            database,
            clock,
            broker.client,
            address,
            settings.api_client_id,
            on_status=lambda _cmd, status: metrics.commands.labels(status.value).inc(),
        )
        dispatcher.start()
        return cls(
            settings=settings,
            clock=clock,
            sessions=sessions,
            database=database,
            influx=InfluxReader(
                settings.influx_url,
                settings.influx_db,
                username=settings.influx_user,
                password=settings.influx_password,
                timeout=5.0,
            ),
            tokens=tokens,
            links=links,
            metrics=metrics,
            principals=TtlCache(PRINCIPAL_TTL_S),
            devices=TtlCache(GRID_MAP_TTL_S),
            grid_maps=grid_maps,
            answers=answers,
            sql_in_process=engine.dialect.name == "sqlite",
            sql_readers=CapacityLimiter(SQL_READERS),
            live=live,
            broker=broker,
            dispatcher=dispatcher,
        )

    def registry_changed(self) -> None:
        """Drop what was derived from the registry or the users (this replica's caches)."""
        self.grid_maps.invalidate()
        self.devices.clear()
        self.principals.clear()

    async def read(self, work: Callable[[Session], T]) -> T:
        """``work(session)`` with a session of its own, for an async route.

        PostgreSQL is waited for on a worker thread, so that the event loop serves
        other requests meanwhile. SQLite is read right here: a read is this process's
        own CPU work on a WAL snapshot (it never waits for a writer), and a thread
        would only add hand-offs of the GIL: at 300 alert lists/s they doubled the
        CPU per request (p99 83 ms, against 33 ms read here).
        """

        def run() -> T:
            with self.sessions() as session:
                return work(session)

        if self.sql_in_process:
            return run()
        return await anyio.to_thread.run_sync(run, limiter=self.sql_readers)

    async def close(self) -> None:
        """Close everything."""
        self.dispatcher.close()
        self.broker.close()
        await self.influx.aclose()
        self.sessions.kw["bind"].dispose()
