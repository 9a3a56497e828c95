"""The notification channels: WeCom and DingTalk group robots, a signed JSON webhook, SMS, MQTT.

Each channel turns one notification's content into what its receiver expects
and says whether the receiver took it. The four HTTP channels share one
``HttpSender``; retries, backoff and the record of every attempt belong to the
outbox dispatcher (``alerts.outbox``), the same for every channel.

Formats (the receivers' own documentation):

- WeCom group robot: ``POST {url}`` with ``{"msgtype": "markdown", "markdown":
  {"content": ...}}``; the answer ``{"errcode": 0}`` means sent.
- DingTalk robot: ``POST {url}&timestamp={ms}&sign={sign}``, where ``sign`` is
  the URL-encoded Base64 of HMAC-SHA256 over ``"{timestamp}\\n{secret}"`` keyed
  with the secret (only when the robot has a secret); body ``{"msgtype":
  "markdown", "markdown": {"title", "text"}}``; ``{"errcode": 0}`` means sent.
- gridwatch webhook: ``POST {url}`` with the event as JSON and the headers
  ``X-Gridwatch-Timestamp`` (ms), ``X-Gridwatch-Delivery`` (the notification
  id, the same on every retry: receivers drop repeats by it) and, when the
  channel has a secret, ``X-Gridwatch-Signature: sha256=<hex HMAC-SHA256 of
  "{timestamp}." + body, keyed with the secret>``; any 2xx means taken.
- SMS gateway: ``POST {url}`` with ``{"phone", "text"}``; any 2xx means taken.
- MQTT: the event as JSON on ``sc/{community}/alerts``, QoS 1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote_plus

import httpx

from gridwatch.clock import Clock

# Robot error codes that mean "later": WeCom's and DingTalk's rate limits (20 messages a minute).
RETRYABLE_ROBOT_CODES = frozenset({45009, 130101})


class DeliveryError(Exception):
    """A send that did not go through; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.status = status


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification to send: its id, the channel's registry entry, the content."""

    id: int
    config: Mapping[str, Any]
    content: Mapping[str, Any]


class Channel(Protocol):
    """Sends one delivery; returns the receiver's status code, raises ``DeliveryError``."""

    def send(self, delivery: Delivery) -> int | None:
        """Send, or raise ``DeliveryError``."""
        ...


def _json(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class HttpSender:
    """POSTs JSON and sorts failures into retry-later and give-up, for every HTTP channel."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """POST ``body`` (JSON); 2xx returns, anything else raises ``DeliveryError``."""
        try:
            response = self._client.post(
                url, content=body, headers={"Content-Type": "application/json", **(headers or {})}
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retry=True) from exc
        status = response.status_code
        if status < 300:
            return response
        retry = status == 429 or status >= 500
        raise DeliveryError(f"HTTP {status}: {response.text[:200]}", retry=retry, status=status)


def _robot_reply(response: httpx.Response) -> int:
    """WeCom and DingTalk answer 200 with ``errcode``; only 0 means the message was sent."""
    try:
        reply = response.json()
        code = int(reply.get("errcode", -1))
    except (ValueError, AttributeError):
        raise DeliveryError(f"not a robot reply: {response.text[:200]}", retry=True) from None
    if code != 0:
        message = f"errcode {code}: {reply.get('errmsg', '')}"[:300]
        raise DeliveryError(message, retry=code in RETRYABLE_ROBOT_CODES, status=200)
    return response.status_code


class WeComChannel:
    """企业微信 group robot, Markdown message."""

    def __init__(self, sender: HttpSender) -> None:
        self._sender = sender

    def send(self, delivery: Delivery) -> int | None:
        """Post the Markdown content."""
        body = {"msgtype": "markdown", "markdown": {"content": delivery.content["markdown"]}}
        return _robot_reply(self._sender.post(delivery.config["url"], _json(body)))


def dingtalk_sign(timestamp_ms: int, secret: str) -> str:
    """DingTalk's ``sign``: URL-encoded Base64 HMAC-SHA256 of "timestamp\\nsecret"."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return quote_plus(base64.b64encode(digest))


class DingTalkChannel:
    """钉钉 robot, Markdown message, signed when the robot has a secret."""

    def __init__(self, sender: HttpSender, clock: Clock) -> None:
        self._sender = sender
        self._clock = clock

    def send(self, delivery: Delivery) -> int | None:
        """Sign the URL (DingTalk refuses a timestamp more than an hour off) and post."""
        url = str(delivery.config["url"])
        secret = delivery.config.get("secret")
        if secret:
            timestamp = self._clock.now_ms()
            joiner = "&" if "?" in url else "?"
            url = f"{url}{joiner}timestamp={timestamp}&sign={dingtalk_sign(timestamp, secret)}"
        content = delivery.content
        body = {
            "msgtype": "markdown",
            "markdown": {"title": content["title"], "text": content["markdown"]},
        }
        return _robot_reply(self._sender.post(url, _json(body)))


def webhook_signature(secret: str, timestamp_ms: int, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``"{timestamp}." + body``."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


class WebhookChannel:
    """A generic JSON webhook: the event, timestamped, with an HMAC signature if configured."""

    def __init__(self, sender: HttpSender, clock: Clock) -> None:
        self._sender = sender
        self._clock = clock

    def send(self, delivery: Delivery) -> int | None:
        """Post the event."""
        body = _json(delivery.content["event"])
        timestamp = self._clock.now_ms()
        headers = {
            "X-Gridwatch-Timestamp": str(timestamp),
            "X-Gridwatch-Delivery": str(delivery.id),
        }
        secret = delivery.config.get("secret")
        if secret:
            headers["X-Gridwatch-Signature"] = webhook_signature(secret, timestamp, body)
        return self._sender.post(delivery.config["url"], body, headers).status_code


class SmsChannel:
    """An SMS gateway's webhook: the phone and the short text."""

    def __init__(self, sender: HttpSender) -> None:
        self._sender = sender

    def send(self, delivery: Delivery) -> int | None:
        """Post phone and text."""
        body = {"phone": delivery.config["phone"], "text": delivery.content["text"]}
        return self._sender.post(delivery.config["url"], _json(body)).status_code


Publish = Callable[[str, bytes], None]


class MqttChannel:
    """The control room topic; ``publish(topic, payload)`` raises unless the broker took it."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish

    def send(self, delivery: Delivery) -> int | None:
        """Publish the event."""
        try:
            self._publish(str(delivery.config["topic"]), _json(delivery.content["event"]))
        except (OSError, RuntimeError, ValueError) as exc:
            raise DeliveryError(f"MQTT publish failed: {exc}", retry=True) from exc
        return None


def standard_channels(client: httpx.Client, clock: Clock, publish: Publish) -> dict[str, Channel]:
    """Every channel type the registry knows, by its ``type``."""
    sender = HttpSender(client)
    return {
        "wecom": WeComChannel(sender),
        "dingtalk": DingTalkChannel(sender, clock),
        "webhook": WebhookChannel(sender, clock),
        "sms": SmsChannel(sender),
        "mqtt": MqttChannel(publish),
    }
