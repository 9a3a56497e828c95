"""Alerts: alerts, their transitions and comments, the notification outbox and its attempts,
and the rule engine's persisted state.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A migration is a frozen snapshot: it spells out its types instead of importing the models.
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ms(name: str, *, nullable: bool = False) -> sa.Column[int]:
    """A time in ms since the epoch."""
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def _fk(table: str, column: str, target: str, ondelete: str = "CASCADE") -> sa.ForeignKey:
    return sa.ForeignKey(f"{target}.id", name=f"fk_{table}_{column}_{target}", ondelete=ondelete)


def _alert_id(table: str) -> sa.Column[int]:
    """The alert a row belongs to (deleted with it)."""
    return sa.Column("alert_id", sa.Integer(), _fk(table, "alert_id", "alerts"), nullable=False)


def upgrade() -> None:
    """Create the alert tables."""
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "community_id",
            sa.String(32),
            _fk("alerts", "community_id", "communities"),
            nullable=False,
        ),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("title", sa.String(128), nullable=False),
        sa.Column("action", sa.String(256), nullable=False),
        sa.Column("place", sa.String(200), nullable=False),
        sa.Column("grid", sa.String(64), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("facts", JSON_DOCUMENT, nullable=False),
        sa.Column("open_key", sa.String(200), nullable=True),
        sa.Column("group_key", sa.String(200), nullable=True),
        sa.Column(
            "parent_id",
            sa.Integer(),
            _fk("alerts", "parent_id", "alerts", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("auto_resolve", sa.Boolean(), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        _ms("since_ms"),
        _ms("opened_ms"),
        _ms("last_ms"),
        _ms("acknowledged_ms", nullable=True),
        sa.Column("acknowledged_by", sa.String(64), nullable=True),
        _ms("escalated_ms", nullable=True),
        _ms("resolved_ms", nullable=True),
        sa.Column("resolved_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("community_id", "open_key", name="uq_alerts_community_id_open_key"),
        sa.CheckConstraint("severity IN ('critical', 'major', 'minor')", name="ck_alerts_severity"),
        sa.CheckConstraint(
            "status IN ('open', 'acknowledged', 'resolved')", name="ck_alerts_status"
        ),
    )
    op.create_index("ix_alerts_community_id_opened_ms", "alerts", ["community_id", "opened_ms"])
    op.create_index("ix_alerts_status_severity", "alerts", ["status", "severity"])
    op.create_index("ix_alerts_parent_id", "alerts", ["parent_id"])
    op.create_table(
        "alert_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        _alert_id("alert_transitions"),
        sa.Column("transition", sa.String(16), nullable=False),
        _ms("at_ms"),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("note", sa.String(500), nullable=True),
        sa.Column("exported", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_transitions"),
        sa.CheckConstraint(
            "transition IN ('opened', 'acknowledged', 'escalated', 'resolved')",
            name="ck_alert_transitions_transition",
        ),
    )
    op.create_index("ix_alert_transitions_alert_id", "alert_transitions", ["alert_id"])
    op.create_index("ix_alert_transitions_exported_id", "alert_transitions", ["exported", "id"])
    op.create_table(
        "alert_comments",
        sa.Column("id", sa.Integer(), nullable=False),
        _alert_id("alert_comments"),
        _ms("at_ms"),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("text", sa.String(1000), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_comments"),
    )
    op.create_index("ix_alert_comments_alert_id", "alert_comments", ["alert_id"])
    op.create_table(
        "alert_notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        _alert_id("alert_notifications"),
        sa.Column(
            "transition_id",
            sa.Integer(),
            _fk("alert_notifications", "transition_id", "alert_transitions"),
            nullable=False,
        ),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("target", sa.String(2048), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("config", JSON_DOCUMENT, nullable=False),
        sa.Column("content", JSON_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ms("created_ms"),
        _ms("next_attempt_ms"),
        _ms("sent_ms", nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_notifications"),
        sa.UniqueConstraint(
            "transition_id",
            "channel",
            "target",
            name="uq_alert_notifications_transition_id_channel_target",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed')", name="ck_alert_notifications_status"
        ),
    )
    op.create_index("ix_alert_notifications_alert_id", "alert_notifications", ["alert_id"])
    op.create_index(
        "ix_alert_notifications_status_next_attempt_ms",
        "alert_notifications",
        ["status", "next_attempt_ms"],
    )
    op.create_table(
        "alert_send_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "notification_id",
            sa.Integer(),
            _fk("alert_send_attempts", "notification_id", "alert_notifications"),
            nullable=False,
        ),
        _ms("at_ms"),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_send_attempts"),
    )
    op.create_index(
        "ix_alert_send_attempts_notification_id",
        "alert_send_attempts",
        ["notification_id"],
    )
    op.create_table(
        "alert_rule_state",
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column(
            "community_id",
            sa.String(32),
            _fk("alert_rule_state", "community_id", "communities"),
            nullable=False,
        ),
        sa.Column("state", JSON_DOCUMENT, nullable=False),
        _ms("due_ms", nullable=True),
        sa.PrimaryKeyConstraint("rule", "key", name="pk_alert_rule_state"),
    )
    op.create_index("ix_alert_rule_state_community_id", "alert_rule_state", ["community_id"])


def downgrade() -> None:
    """Drop the alert tables, dependents first."""
    for table in (
        "alert_rule_state",
        "alert_send_attempts",
        "alert_notifications",
        "alert_comments",
        "alert_transitions",
        "alerts",
    ):
        op.drop_table(table)
