"""Where the broker is: parsed from ``GW_MQTT_URL`` (no MQTT library needed)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker is and how to log in."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None  # the CA that signed the broker's certificate (mqtts)

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        """Parse ``mqtt[s]://[user[:pass]@]host[:port][?cafile=PATH]`` (1883 / 8883 by default).

        Without ``cafile``, a TLS client trusts the system's CAs (a real certificate).
        """
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        ca_files = parse_qs(parts.query).get("cafile")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ca_file=ca_files[-1] if ca_files else None,
        )
