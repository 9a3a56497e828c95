"""What the alert tests share: a fresh database, the HTTP stand-ins, and the golden-case runner.

The stand-in is a real HTTP server (``http.server`` on 127.0.0.1) that answers as
WeCom, DingTalk, a gridwatch webhook receiver and an SMS gateway would, and
checks what they check: DingTalk recomputes the signature from its own copy of
the secret and refuses a timestamp more than an hour off, the webhook receiver
verifies the HMAC header, both robots insist on their Markdown format.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from alerts.channels import standard_channels
from alerts.directory import load_directory
from alerts.models import Alert, AlertNotification, AlertTransition
from alerts.outbox import Dispatcher, RetryPolicy
from alerts.service import AlertProcessor
from alerts.sql import Database
from gridwatch.clock import WallClock
from registry.db import make_engine, migrate
from registry.importer import import_document

DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
CASES_DIR = Path(__file__).parent
COMMUNITY_FILE = CASES_DIR / "community.yaml"
BASE_URL = "https://gw.example.cn"


def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of the test's own (``request.param``: sqlite or postgresql)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'alerts.db'}"
        migrate(url)
        yield url
        return
    server = request.getfixturevalue("postgres")
    name = f"alerts_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name)
    migrate(url)
    yield url
    admin = make_engine(server.url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


# --- the HTTP stand-ins -------------------------------------------------------------


@dataclass
class Request:
    """One request the stand-in received, and whether it passed the receiver's checks."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    problem: str = ""  # empty: accepted


def _dingtalk_problem(secret: str | None, query: Mapping[str, str], body: Any) -> str:
    if secret is not None:
        try:
            timestamp = int(query["timestamp"])
        except (KeyError, ValueError):
            return "no timestamp"
        if abs(time.time() * 1000 - timestamp) > 3_600_000:
            return "timestamp more than an hour off"
        digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256)
        if query.get("sign") != base64.b64encode(digest.digest()).decode():
            return "sign not match"
    markdown = body.get("markdown") if isinstance(body, dict) else None
    if body.get("msgtype") != "markdown" or not isinstance(markdown, dict):
        return "not a markdown message"
    if not markdown.get("title") or not markdown.get("text"):
        return "markdown needs title and text"
    return ""


def _wecom_problem(body: Any) -> str:
    markdown = body.get("markdown") if isinstance(body, dict) else None
    if body.get("msgtype") != "markdown" or not isinstance(markdown, dict):
        return "not a markdown message"
    content = markdown.get("content")
    if not isinstance(content, str) or not 0 < len(content.encode()) <= 4096:
        return "content must be 1-4096 bytes"
    return ""


def _webhook_problem(secret: str | None, headers: Mapping[str, str], raw: bytes) -> str:
    if not headers.get("x-gridwatch-delivery"):
        return "no delivery id"
    if secret is None:
        return ""
    timestamp = headers.get("x-gridwatch-timestamp", "")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
    if headers.get("x-gridwatch-signature") != f"sha256={expected.hexdigest()}":
        return "bad signature"
    return ""


def _sms_problem(body: Any) -> str:
    if not isinstance(body, dict) or not body.get("phone") or not body.get("text"):
        return "phone and text required"
    return ""


class StandIn:
    """WeCom, DingTalk, webhook and SMS endpoints on one local port; see the module docstring."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}  # path → the receiver's copy of the secret
        self.requests: list[Request] = []
        self.failures: dict[str, deque[int]] = defaultdict(deque)  # path → statuses to answer
        self.received = threading.Condition()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stand_in.handle(self)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Where it listens."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        """Check one request as the real receiver would, record it, answer."""
        parts = urlsplit(handler.path)
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        path = parts.path
        kind = path.strip("/").split("/")[0]
        secret = self.secrets.get(path)
        if not isinstance(body, dict):
            problem = "body is not a JSON object"
        elif kind == "dingtalk":
            problem = _dingtalk_problem(secret, query, body)
        elif kind == "wecom":
            problem = _wecom_problem(body)
        elif kind == "webhook":
            problem = _webhook_problem(secret, headers, raw)
        else:
            problem = _sms_problem(body)
        failure = self.failures[path].popleft() if self.failures[path] else None
        with self.received:
            self.requests.append(Request(path, query, headers, body, problem))
            self.received.notify_all()
        if failure is not None:
            self._answer(handler, failure, {"error": "scripted failure"})
        elif kind in ("dingtalk", "wecom"):  # robots answer 200 and say in errcode
            code = 310000 if problem == "sign not match" else (40008 if problem else 0)
            self._answer(handler, 200, {"errcode": code, "errmsg": problem or "ok"})
        else:
            self._answer(handler, 401 if problem else 200, {"ok": not problem})

    def _answer(self, handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def accepted(self) -> list[Request]:
        """What went through the receivers' checks (and was not a scripted failure)."""
        return [r for r in self.requests if not r.problem]


def received_text(request: Request) -> str:
    """The notification's words as the receiver got them."""
    body = request.body
    kind = request.path.strip("/").split("/")[0]
    if kind == "wecom":
        return str(body["markdown"]["content"])
    if kind == "dingtalk":
        return str(body["markdown"]["text"])
    if kind == "webhook":
        return json.dumps(body, ensure_ascii=False, sort_keys=True)
    return str(body["text"])


def sent_text(channel: str, content: Mapping[str, Any]) -> str:
    """The words a notification row should have delivered on ``channel``."""
    if channel in ("wecom", "dingtalk"):
        return str(content["markdown"])
    if channel == "webhook":
        return json.dumps(content["event"], ensure_ascii=False, sort_keys=True)
    return str(content["text"])


# --- the community of the cases -----------------------------------------------------


def community_document(
    stand_in: StandIn, settings: Mapping[str, Any] | None = None, community: str = "zjxc"
) -> Any:
    """tests/alerts_cases/community.yaml, its URLs on the stand-in, secrets shared with it.

    ``community`` renames the community and its devices (zjxc-door-b03-u2 → <id>-door-b03-u2),
    so a test on the shared broker sees nobody else's messages.
    """
    raw = COMMUNITY_FILE.read_text(encoding="utf-8").replace("{http}", stand_in.url)
    raw = raw.replace("zjxc", community)
    document = yaml.safe_load(raw)
    document["community"]["settings"] = {"alerts": dict(settings or {})}
    people = [*document.get("managers", [])]
    for grid in document["grids"]:
        people.extend(grid.get("workers", []))
    for person in people:
        for channel in person.get("channels", []):
            if channel.get("secret"):
                stand_in.secrets[urlsplit(channel["url"]).path] = channel["secret"]
    return document


def import_community(
    sessions: sessionmaker[Session],
    stand_in: StandIn,
    settings: Mapping[str, Any] | None = None,
    community: str = "zjxc",
) -> None:
    """Load the cases' community into the registry."""
    with sessions.begin() as session:
        import_document(session, community_document(stand_in, settings, community))


# --- golden cases -------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)(ms|h|m|s)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def offset_ms(value: str | int) -> int:
    """``"1h30m"`` → 5400000; a bare number is seconds."""
    if isinstance(value, int):
        return value * 1000
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {value!r} (e.g. 90s, 15m, 1h30m)")
    return sum(int(n) * _UNIT_MS[u] for n, u in parts)


def show_offset(ms: int) -> str:
    """5400000 → ``"1h30m"`` (the inverse of ``offset_ms`` for whole seconds)."""
    out = ""
    for unit in ("h", "m", "s"):
        n, ms = divmod(ms, _UNIT_MS[unit])
        out += f"{n}{unit}" if n else ""
    return out or "0s"


@dataclass(order=True)
class _Step:
    at_ms: int
    order: int
    spec: dict[str, Any] = field(compare=False)


def _expand(steps: list[dict[str, Any]]) -> list[_Step]:
    """Repeat ``every`` steps up to ``until``; order by time, then by place in the file."""
    out: list[_Step] = []
    for order, spec in enumerate(steps):
        at = offset_ms(spec["at"])
        if "every" in spec:
            every, until = offset_ms(spec["every"]), offset_ms(spec["until"])
            out.extend(_Step(t, order, spec) for t in range(at, until + 1, every))
        else:
            out.append(_Step(at, order, spec))
    return sorted(out)


@dataclass
class CaseRun:
    """What a case produced: alerts (with transitions) and notification rows, as plain data."""

    alerts: list[dict[str, Any]]
    notifications: list[str]
    start_ms: int


class CaseRunner:
    """Plays one golden case through the real processor, store and dispatcher."""

    def __init__(self, case: Mapping[str, Any], sessions: sessionmaker[Session], stand_in: StandIn):
        self.case = case
        self.sessions = sessions
        self.database = Database(sessions)
        self.stand_in = stand_in
        self.start_ms = int(datetime.fromisoformat(str(case["start"])).timestamp() * 1000)
        self.published: list[tuple[str, bytes]] = []
        self._seq: dict[str, int] = defaultdict(int)
        self._devices: dict[str, tuple[str, str]] = {}

    def _processor(self) -> AlertProcessor:
        return AlertProcessor(
            Database(self.sessions),
            base_url=BASE_URL,
            wall=WallClock(),
            escalate_after_ms=15 * 60_000,
        )

    def run(self) -> CaseRun:
        """Import the community, play the steps, send the notifications, read back the outcome."""
        import_community(self.sessions, self.stand_in, self.case.get("settings"))
        with self.sessions() as session:
            directory = load_directory(session)
        self._devices = {d.device_id: (d.community, d.kind) for d in directory.devices.values()}
        processor = self._processor()
        for step in _expand(list(self.case["steps"])):
            processor = self._play(processor, step)
        with httpx.Client(timeout=5.0) as client:
            channels = standard_channels(client, WallClock(), self._publish)
            dispatcher = Dispatcher(
                Database(self.sessions),
                channels,
                WallClock(),
                policy=RetryPolicy(first_backoff_ms=50),
            )
            try:
                dispatcher.drain()
            finally:
                dispatcher.close()
        return self._outcome()

    def _publish(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, payload))

    def _play(self, processor: AlertProcessor, step: _Step) -> AlertProcessor:
        spec, ts = step.spec, self.start_ms + step.at_ms
        if spec.get("restart"):
            return self._processor()  # everything it knows comes back from SQL
        if spec.get("advance"):
            processor.process([], now_ms=ts)
        elif "ack" in spec or "resolve" in spec:
            self._person(processor, spec, ts)
        else:
            processor.process([self._message(spec, ts)])
        return processor

    def _person(self, processor: AlertProcessor, spec: Mapping[str, Any], ts: int) -> None:
        rule = spec.get("ack") or spec.get("resolve")
        with self.sessions.begin() as session:
            alert = session.scalars(
                select(Alert).where(Alert.rule == rule, Alert.open_key.is_not(None))
            ).one()
            if "ack" in spec:
                processor.store.acknowledge(session, alert.id, spec["by"], ts, spec.get("note"))
            else:
                processor.store.resolve(session, alert.id, spec["by"], ts, spec.get("note"))

    def _message(self, spec: Mapping[str, Any], ts: int) -> tuple[str, bytes, int]:
        device = spec["device"]
        community, kind = self._devices[device]
        if "camera" in spec:  # the imagery service's report on a robot's camera
            report = {
                **{"event": spec["camera"], "ts": ts, "community": community, "kind": kind},
                **{"device_id": device, "since_ms": ts, "bad_frames": 0, "snapshot_ids": []},
                **spec.get("fields", {}),
            }
            return f"sc/{community}/imagery", json.dumps(report).encode(), ts
        if "status" in spec:
            payload = dict(spec["status"])
            if payload.get("online", True):
                payload["ts"] = ts
            channel = "status"
        else:
            self._seq[device] += 1
            base = {"ts": ts, "seq": self._seq[device]}
            if "event" in spec:
                payload = {**base, "event": spec["event"], **spec.get("fields", {})}
                channel = "event"
            else:
                payload = {**base, **spec["telemetry"]}
                channel = "telemetry"
        topic = f"sc/{community}/{kind}/{device}/{channel}"
        return topic, json.dumps(payload).encode(), ts

    def _outcome(self) -> CaseRun:
        with self.sessions() as session:
            rows = session.execute(
                select(Alert.rule, AlertTransition.transition, AlertNotification)
                .join(AlertTransition, AlertTransition.id == AlertNotification.transition_id)
                .join(Alert, Alert.id == AlertNotification.alert_id)
                .order_by(AlertNotification.id)
            ).all()
            opened = {
                row.alert_id: row.content["markdown"]
                for _, transition, row in reversed(rows)
                if transition == "opened"
            }
            alerts = [
                {
                    "rule": alert.rule,
                    "subject": alert.subject,
                    "severity": alert.severity,
                    "status": alert.status,
                    "title": alert.title,
                    "place": alert.place,
                    "transitions": [
                        f"{t.transition} {show_offset(t.at_ms - self.start_ms)}"
                        for t in alert.transitions
                    ],
                    "markdown": opened.get(alert.id, ""),
                }
                for alert in session.scalars(select(Alert).order_by(Alert.id))
            ]
        self._check_delivered([row[2] for row in rows])
        notifications = [
            f"{rule} {transition} {row.channel} {row.recipient}" for rule, transition, row in rows
        ]
        return CaseRun(alerts, notifications, self.start_ms)

    def _check_delivered(self, rows: list[AlertNotification]) -> None:
        """Every row was sent; each HTTP one reached the stand-in once, word for word."""
        assert [r.id for r in rows if r.status != "sent"] == [], "unsent notifications"
        assert all(not r.problem for r in self.stand_in.requests), self.stand_in.requests
        received = sorted((r.path, received_text(r)) for r in self.stand_in.accepted())
        expected = sorted(
            (urlsplit(r.config["url"]).path, sent_text(r.channel, r.content))
            for r in rows
            if r.channel != "mqtt"
        )
        assert received == expected
        published = sorted(json.loads(p)["alert_id"] for _, p in self.published)
        assert published == sorted(r.alert_id for r in rows if r.channel == "mqtt")
