"""What the API holds open for its lifetime: SQL, InfluxDB and a broker connection."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from sqlalchemy.orm import Session, sessionmaker

from broker.connection import BrokerAddress, make_client
from gridwatch.settings import Settings
from influx.client import InfluxClient
from registry.db import make_engine, make_sessionmaker


class BrokerLink:
    """A long-lived broker connection: its state is the API's view of broker health."""

    def __init__(self, address: BrokerAddress, client_id: str) -> None:
        self.client: mqtt.Client = make_client(address, client_id)
        self.connected = threading.Event()
        self.client.on_connect = lambda *_: self.connected.set()
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.connect_async(address.host, address.port, keepalive=30)
        self.client.loop_start()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class AppState:
    """Connections shared by every request."""

    settings: Settings
    sessions: sessionmaker[Session]
    influx: InfluxClient
    broker: BrokerLink

    @classmethod
    def open(cls, settings: Settings) -> AppState:
        """Open the connections named by the settings."""
        return cls(
            settings=settings,
            sessions=make_sessionmaker(make_engine(settings.sql_url)),
            influx=InfluxClient(
                settings.influx_url,
                settings.influx_db,
                username=settings.influx_user,
                password=settings.influx_password,
                timeout=5.0,
            ),
            broker=BrokerLink(BrokerAddress.from_url(settings.mqtt_url), "gridwatch-api"),
        )

    def close(self) -> None:
        """Close everything."""
        self.broker.close()
        self.influx.close()
