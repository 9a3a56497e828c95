"""The API's own tables: people who log in, their API keys, and the commands they sent.

On the registry's declarative base (one metadata, one migration chain:
``registry/migrations/versions/0003_api.py``). Times are ms since the epoch.

A command row is also its audit record: who sent what to which device, when
it was published, and what became of it. It names its device and community by
value, without foreign keys, so the record outlives a deleted device.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from registry.models import Base, Grid


class Role(StrEnum):
    """What a user may do; see api/README.md for the whole table."""

    ADMIN = "admin"  # everything, every community
    OPERATOR = "operator"  # a community's control room
    GRID_WORKER = "grid_worker"  # only the grids they serve
    VIEWER = "viewer"  # reads, personal data masked


class CommandStatus(StrEnum):
    """Where a command stands: queued → sent → acknowledged / failed / expired."""

    QUEUED = "queued"  # stored, not yet taken by the broker
    SENT = "sent"  # the broker took it (PUBACK)
    ACKNOWLEDGED = "acknowledged"  # the device did it (cmd_ack ok)
    FAILED = "failed"  # the device refused it (cmd_ack with an error)
    EXPIRED = "expired"  # no cmd_ack by expires_ts


PENDING_COMMANDS = (CommandStatus.QUEUED, CommandStatus.SENT)


def _among(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class User(Base):
    """Someone who logs in (password) or an integration acting as them (API keys).

    ``community_id`` scopes operators, grid workers and viewers (NULL: every
    community, for admins and city-wide viewers); a grid worker also lists
    the grids they serve in ``grids``.
    """

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_among("role", Role), name="role"),
        CheckConstraint(
            "role IN ('admin', 'viewer') OR community_id IS NOT NULL", name="community_scoped"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    community_id: Mapped[str | None] = mapped_column(
        ForeignKey("communities.id", ondelete="CASCADE"), index=True
    )
    password_hash: Mapped[str | None] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)

    grids: Mapped[list[Grid]] = relationship(secondary="user_grids", order_by=Grid.id)


class UserGrid(Base):
    """A grid a grid worker serves."""

    __tablename__ = "user_grids"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    grid_id: Mapped[int] = mapped_column(
        ForeignKey("grids.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ApiKey(Base):
    """An API key acting as its user; only the SHA-256 of the secret part is stored.

    The key is ``gw_<prefix>_<secret>``: the prefix finds the row, the secret
    (32 random bytes) is compared by its hash.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int | None] = mapped_column(BigInteger)

    user: Mapped[User] = relationship()


class Command(Base):
    """A command to a device and its fate (the audit record: who, what, when, result)."""

    __tablename__ = "commands"
    __table_args__ = (
        CheckConstraint(_among("status", CommandStatus), name="status"),
        Index("ix_commands_device_id_created_ms", "device_id", "created_ms"),
        Index("ix_commands_community_id_created_ms", "community_id", "created_ms"),
        Index("ix_commands_status_expires_ms", "status", "expires_ms"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the contract's cmd_id
    device_id: Mapped[str] = mapped_column(String(64))
    community_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(32))
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=CommandStatus.QUEUED.value)
    requested_by: Mapped[str] = mapped_column(String(64))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int] = mapped_column(BigInteger)
    sent_ms: Mapped[int | None] = mapped_column(BigInteger)
    finished_ms: Mapped[int | None] = mapped_column(BigInteger)
    ack_ts: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(String(256))
