"""The broker's accounts in SQL, on the registry's metadata (migration ``0005_mqtt_accounts``).

One row per MQTT account: a device (username = device id) or a gridwatch
service. Only Mosquitto's hash of the password is kept; the password itself is
shown once, when it is issued or rotated. A revoked account keeps its row (when
and that it was revoked) but leaves the broker's password file. Times are ms
since the epoch.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from registry.models import Base


class AccountKind(StrEnum):
    """Whose account it is."""

    DEVICE = "device"
    SERVICE = "service"


class MqttAccount(Base):
    """An MQTT login: username, Mosquitto password hash, and its history."""

    __tablename__ = "mqtt_accounts"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(160))
    issued_ms: Mapped[int] = mapped_column(BigInteger)
    rotated_ms: Mapped[int | None] = mapped_column(BigInteger)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger)
