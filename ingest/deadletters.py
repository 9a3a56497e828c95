"""The dead-letter store: every rejected message, with why, where from and what it said.

Dead letters live in InfluxDB, measurement ``dead_letter`` (tags ``reason`` and
``kind``; fields ``topic``, ``detail``, ``payload`` (the first KiB, control
characters escaped) and ``size``), so they are queryable with InfluxQL, kept
by the same retention policy, and countable in Grafana:

    SELECT * FROM dead_letter WHERE reason = 'schema' AND time > now() - 1h

Unlike device data they are timestamped in nanoseconds of arrival, unique per
message, because two rejections in the same millisecond must not overwrite
each other.
"""

from __future__ import annotations

import re
import threading
import time

from influx.lineprotocol import FieldValue, Point, encode_point

DEAD_LETTER_MEASUREMENT = "dead_letter"
PAYLOAD_KEPT_BYTES = 1024
TOPIC_KEPT_CHARS = 256
DETAIL_KEPT_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class ArrivalClock:
    """Nanosecond arrival stamps that never repeat, even within one clock tick."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def stamp(self) -> int:
        """A unique, increasing ns timestamp."""
        with self._lock:
            self._last = max(self._last + 1, time.time_ns())
            return self._last


def printable(raw: bytes) -> str:
    """The first KiB of a payload as text, bytes that are not UTF-8 or are control codes escaped."""
    text = raw[:PAYLOAD_KEPT_BYTES].decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def dead_letter_line(
    *, reason: str, kind: str, topic: str, detail: str, payload: bytes, arrival_ns: int
) -> str:
    """One ``dead_letter`` line (ns precision)."""
    fields: dict[str, FieldValue] = {
        "topic": printable(topic.encode()[:TOPIC_KEPT_CHARS]),
        "detail": detail[:DETAIL_KEPT_CHARS],
        "payload": printable(payload),
        "size": len(payload),
    }
    # Point.time_ms carries nanoseconds here: this line is written with precision=ns.
    return encode_point(
        Point(DEAD_LETTER_MEASUREMENT, {"reason": reason, "kind": kind}, fields, arrival_ns)
    )
