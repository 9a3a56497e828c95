"""Channels and the outbox against the HTTP stand-in: formats, signatures, retries, attempts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from alerts.channels import Delivery, DingTalkChannel, HttpSender, dingtalk_sign, standard_channels
from alerts.directory import load_directory
from alerts.engine import default_rules
from alerts.models import AlertNotification, AlertSendAttempt
from alerts.outbox import Dispatcher, RetryPolicy
from alerts.routing import Router
from alerts.rule import Finding, Severity
from alerts.sql import Database
from alerts.store import AlertStore
from gridwatch.clock import ManualClock, WallClock
from registry.db import make_engine, make_sessionmaker, migrate
from tests.alerts_cases.harness import StandIn, import_community

T0 = 1_795_000_000_000


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    """The HTTP stand-in for WeCom, DingTalk, webhook and SMS."""
    with StandIn() as server:
        yield server


@pytest.fixture
def database(tmp_path: Path, stand_in: StandIn) -> Iterator[Database]:
    """The cases' community in a fresh SQLite database."""
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    migrate(url)
    engine = make_engine(url)
    sessions: sessionmaker[Session] = make_sessionmaker(engine)
    import_community(sessions, stand_in)
    yield Database(sessions)
    engine.dispose()


def open_door_alert(database: Database, now: ManualClock) -> None:
    """A forced door in grid 1: notifications owed to the control room, 李秀梅 and 王建军."""
    with database.read() as session:
        door = load_directory(session).devices["zjxc-door-b03-u2"]
    store = AlertStore(default_rules(), Router(), base_url="https://gw.example.cn", wall=now)
    finding = Finding(
        rule="door.forced",
        community="zjxc",
        subject=door.device_id,
        kind="door",
        raised=True,
        ts=T0,
        severity=Severity.CRITICAL,
        device=door,
        device_id=door.device_id,
        since_ms=T0,
        latch=True,
        place=door.place,
    )
    with database.write() as session:
        store.apply(session, [finding])


def dispatcher(database: Database, clock: ManualClock, published: list[bytes]) -> Dispatcher:
    """A dispatcher on the stand-in, its clock in the test's hand."""
    channels = standard_channels(
        httpx.Client(timeout=5), clock, lambda topic, payload: published.append(payload)
    )
    return Dispatcher(database, channels, clock, policy=RetryPolicy(max_attempts=4))


def rows(database: Database) -> dict[str, AlertNotification]:
    """Notification rows by channel."""
    with database.read() as session:
        return {n.channel: n for n in session.scalars(select(AlertNotification))}


def attempts(database: Database, channel: str) -> list[tuple[bool, int | None]]:
    """(ok, status) of every attempt on ``channel``'s notification."""
    with database.read() as session:
        return [
            (a.ok, a.status_code)
            for a in session.scalars(
                select(AlertSendAttempt)
                .join(AlertNotification)
                .where(AlertNotification.channel == channel)
                .order_by(AlertSendAttempt.id)
            )
        ]


def test_every_channel_delivers_in_its_receivers_format(
    database: Database, stand_in: StandIn
) -> None:
    clock = ManualClock(WallClock().now_ms())
    open_door_alert(database, clock)
    published: list[bytes] = []
    sender = dispatcher(database, clock, published)
    sender.drain()
    sender.close()
    assert {c: n.status for c, n in rows(database).items()} == dict.fromkeys(
        ("mqtt", "dingtalk", "webhook", "wecom", "sms"), "sent"
    )
    by_path = {r.path: r for r in stand_in.requests}
    assert all(not r.problem for r in stand_in.requests)
    ding = by_path["/dingtalk/g1"]
    assert ding.query["access_token"] == "t0k3n"  # the robot's own query is kept
    assert ding.body["markdown"]["title"] == "【紧急】单元门被强行打开"
    assert (
        by_path["/wecom/g1"].body["markdown"]["content"].startswith("### 【紧急】单元门被强行打开")
    )
    hook = by_path["/webhook/g1"]
    assert hook.body["rule"] == "door.forced" and hook.body["transition"] == "opened"
    assert hook.headers["x-gridwatch-delivery"] == str(rows(database)["webhook"].id)
    sms = by_path["/sms"].body
    assert sms["phone"] == "13800001002"
    assert sms["text"].startswith(
        "【社区网格】【紧急】单元门被强行打开。地点：张家新村 3号楼2单元。"
    )
    (event,) = [json.loads(p) for p in published]
    assert (event["alert_id"], event["severity"], event["place"]) == (
        1,
        "critical",
        "张家新村 3号楼2单元",
    )


def test_failures_are_retried_with_backoff_and_every_attempt_is_logged(
    database: Database, stand_in: StandIn
) -> None:
    clock = ManualClock(WallClock().now_ms())
    open_door_alert(database, clock)
    stand_in.failures["/wecom/g1"].extend([503, 500])
    stand_in.failures["/sms"].append(400)  # a request the gateway will never take
    sender = dispatcher(database, clock, [])
    sender.drain()
    first = rows(database)["wecom"]
    assert (first.status, first.attempts, first.next_attempt_ms) == (
        "pending",
        1,
        clock.now_ms() + 2000,
    )
    clock.advance(2000)
    sender.drain()
    assert rows(database)["wecom"].next_attempt_ms == clock.now_ms() + 4000  # doubled
    clock.advance(4000)
    sender.drain()
    sender.close()
    assert attempts(database, "wecom") == [(False, 503), (False, 500), (True, 200)]
    assert rows(database)["wecom"].status == "sent"
    assert (rows(database)["sms"].status, attempts(database, "sms")) == ("failed", [(False, 400)])
    wecom_bodies = [r.body for r in stand_in.requests if r.path == "/wecom/g1"]
    assert len(wecom_bodies) == 3 and wecom_bodies[0] == wecom_bodies[2]


def test_give_up_after_the_last_attempt(database: Database, stand_in: StandIn) -> None:
    clock = ManualClock(WallClock().now_ms())
    open_door_alert(database, clock)
    stand_in.failures["/webhook/g1"].extend([502] * 10)
    sender = dispatcher(database, clock, [])
    for _ in range(5):
        sender.drain()
        clock.advance(60_000)
    sender.close()
    row = rows(database)["webhook"]
    assert (row.status, row.attempts) == ("failed", 4)
    assert row.last_error is not None and row.last_error.startswith("HTTP 502")
    hooks = [r for r in stand_in.requests if r.path == "/webhook/g1"]
    assert {r.headers["x-gridwatch-delivery"] for r in hooks} == {str(row.id)}  # one id, 4 tries


def test_a_wrong_dingtalk_secret_is_refused_as_dingtalk_would(stand_in: StandIn) -> None:
    stand_in.secrets["/dingtalk/x"] = "SECright"
    content = {"title": "t", "markdown": "### t"}
    channel = DingTalkChannel(HttpSender(httpx.Client(timeout=5)), WallClock())
    wrong = Delivery(1, {"url": f"{stand_in.url}/dingtalk/x", "secret": "SECwrong"}, content)
    with pytest.raises(Exception, match="errcode 310000") as caught:
        channel.send(wrong)
    assert caught.value.retry is False  # type: ignore[attr-defined]
    right = Delivery(2, {"url": f"{stand_in.url}/dingtalk/x", "secret": "SECright"}, content)
    assert channel.send(right) == 200
    assert [r.problem for r in stand_in.requests] == ["sign not match", ""]


def test_dingtalk_sign_is_url_encoded_base64() -> None:
    # HMAC-SHA256("1577808000000\nsecret", key "secret"), Base64, then URL-encoded
    # ("=" becomes %3D), worked out once by hand with hmac/base64/quote_plus.
    assert dingtalk_sign(1_577_808_000_000, "secret") == (
        "aepA5vF9d6L9JRULhJ2Wado5gFjMA6WASzE4ndfuoCc%3D"
    )


def test_a_claimed_notification_is_not_sent_twice(database: Database, stand_in: StandIn) -> None:
    clock = ManualClock(WallClock().now_ms())
    open_door_alert(database, clock)
    first, second = dispatcher(database, clock, []), dispatcher(database, clock, [])
    claimed = first.dispatch_due() + second.dispatch_due()
    first.drain()
    second.drain()
    first.close()
    second.close()
    assert claimed == 5
    assert len(stand_in.requests) == 4  # 4 HTTP + 1 MQTT, each once
