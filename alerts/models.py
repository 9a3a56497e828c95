"""The alert tables, on the registry's declarative base (one metadata, one migration chain).

Times are integers, milliseconds since the epoch (UTC), like the contract's
``ts``: alert times are event time, notification times are wall time.

``open_key`` is ``rule|subject`` while an alert is unresolved and NULL after:
a unique constraint on (community, open_key) keeps one open alert per rule and
subject in the database itself (NULLs never collide, on SQLite as on PostgreSQL).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from registry.models import Base

OPEN: Final = "open"
ACKNOWLEDGED: Final = "acknowledged"
RESOLVED: Final = "resolved"
STATUSES = (OPEN, ACKNOWLEDGED, RESOLVED)
SEVERITIES = ("critical", "major", "minor")
# Transitions; "escalated" leaves the status as it was (open).
OPENED: Final = "opened"
ESCALATED: Final = "escalated"
TRANSITIONS = (OPENED, ACKNOWLEDGED, ESCALATED, RESOLVED)
PENDING: Final = "pending"
SENT: Final = "sent"
FAILED: Final = "failed"
DELIVERY_STATUSES = (PENDING, SENT, FAILED)
SYSTEM: Final = "system"  # who made an automatic transition


def _among(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _alert_fk() -> ForeignKey:
    return ForeignKey("alerts.id", ondelete="CASCADE")


class Alert(Base):
    """One alert: what, where, since when, and where it stands in its lifecycle."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("community_id", "open_key"),
        CheckConstraint(_among("severity", SEVERITIES), name="severity"),
        CheckConstraint(_among("status", STATUSES), name="status"),
        Index("ix_alerts_community_id_opened_ms", "community_id", "opened_ms"),
        # The API's list: a community's alerts newest first, a page at a time, is this
        # index's first entries. Without it SQLite sorted all the community's ids and
        # PostgreSQL scanned the primary key backwards past other communities' alerts.
        # A list filtered by opened_ms still takes the index above on SQLite.
        Index("ix_alerts_community_id_id", "community_id", "id"),
        Index("ix_alerts_status_severity", "status", "severity"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    community_id: Mapped[str] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    rule: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(128))
    device_id: Mapped[str] = mapped_column(String(64), default="")
    severity: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=OPEN)
    title: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(256))
    place: Mapped[str] = mapped_column(String(200))
    grid: Mapped[str | None] = mapped_column(String(64))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    open_key: Mapped[str | None] = mapped_column(String(200))
    group_key: Mapped[str | None] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("alerts.id", ondelete="SET NULL"), index=True
    )
    auto_resolve: Mapped[bool] = mapped_column(Boolean, default=True)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    since_ms: Mapped[int] = mapped_column(BigInteger)
    opened_ms: Mapped[int] = mapped_column(BigInteger)
    last_ms: Mapped[int] = mapped_column(BigInteger)
    acknowledged_ms: Mapped[int | None] = mapped_column(BigInteger)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    escalated_ms: Mapped[int | None] = mapped_column(BigInteger)
    resolved_ms: Mapped[int | None] = mapped_column(BigInteger)
    resolved_by: Mapped[str | None] = mapped_column(String(64))

    transitions: Mapped[list[AlertTransition]] = relationship(
        order_by="AlertTransition.id", back_populates="alert", passive_deletes=True
    )
    comments: Mapped[list[AlertComment]] = relationship(
        order_by="AlertComment.id", passive_deletes=True
    )


class AlertTransition(Base):
    """A step in an alert's life, with who and when; ``exported`` once InfluxDB has it."""

    __tablename__ = "alert_transitions"
    __table_args__ = (
        CheckConstraint(_among("transition", TRANSITIONS), name="transition"),
        Index("ix_alert_transitions_exported_id", "exported", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(_alert_fk(), index=True)
    transition: Mapped[str] = mapped_column(String(16))
    at_ms: Mapped[int] = mapped_column(BigInteger)
    by: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(String(500))
    exported: Mapped[bool] = mapped_column(Boolean, default=False)

    alert: Mapped[Alert] = relationship(back_populates="transitions")


class AlertComment(Base):
    """A remark by a person on an alert."""

    __tablename__ = "alert_comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(_alert_fk(), index=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    by: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(String(1000))


class AlertNotification(Base):
    """One message to one channel for one transition: the outbox row, then its outcome.

    Written in the transaction that made the transition, so a restart can neither
    lose it nor write it twice; the dispatcher sends it and records each attempt.
    """

    __tablename__ = "alert_notifications"
    __table_args__ = (
        UniqueConstraint("transition_id", "channel", "target"),
        CheckConstraint(_among("status", DELIVERY_STATUSES), name="status"),
        Index("ix_alert_notifications_status_next_attempt_ms", "status", "next_attempt_ms"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(_alert_fk(), index=True)
    transition_id: Mapped[int] = mapped_column(
        ForeignKey("alert_transitions.id", ondelete="CASCADE")
    )
    channel: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(2048))
    recipient: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    content: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    next_attempt_ms: Mapped[int] = mapped_column(BigInteger)
    sent_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(String(500))

    transition: Mapped[AlertTransition] = relationship()


class AlertSendAttempt(Base):
    """One try at sending a notification: when, how long, and what came back."""

    __tablename__ = "alert_send_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("alert_notifications.id", ondelete="CASCADE"), index=True
    )
    at_ms: Mapped[int] = mapped_column(BigInteger)
    duration_ms: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))


class AlertRuleState(Base):
    """A rule's persisted state and timer for one key (see ``alerts.engine``)."""

    __tablename__ = "alert_rule_state"

    rule: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    community_id: Mapped[str] = mapped_column(
        ForeignKey("communities.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    due_ms: Mapped[int | None] = mapped_column(BigInteger)
