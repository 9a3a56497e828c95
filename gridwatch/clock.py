"""One injectable clock for the whole product.

Rules and simulators never call ``time.time()``: they are handed a ``Clock``.
Production uses ``WallClock``; simulations use ``SimulatedClock`` (event time
runs ``speed`` times faster than the wall, from a chosen start); tests use
``ManualClock`` and move it by hand.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Milliseconds since the Unix epoch (UTC), and a way to wait for a moment."""

    def now_ms(self) -> int:
        """The current time in ms since the epoch."""
        ...

    def sleep_until(self, ts_ms: int, stop: threading.Event | None = None) -> bool:
        """Block until ``ts_ms``; return False if ``stop`` was set first."""
        ...


def _wait(seconds: float, stop: threading.Event | None) -> bool:
    if seconds <= 0:
        return not (stop and stop.is_set())
    if stop is None:
        time.sleep(seconds)
        return True
    return not stop.wait(seconds)


class WallClock:
    """Real time."""

    def now_ms(self) -> int:
        """The wall time in ms."""
        return time.time_ns() // 1_000_000

    def sleep_until(self, ts_ms: int, stop: threading.Event | None = None) -> bool:
        """Sleep until the wall clock reads ``ts_ms``."""
        return _wait((ts_ms - self.now_ms()) / 1000, stop)


class SimulatedClock:
    """Event time that starts at ``start_ms`` and runs ``speed`` times faster than the wall.

    ``speed=0`` means "as fast as possible": the clock never waits and reads as
    far as the caller has advanced it with ``sleep_until``. ``stop_ms``, when set,
    is where an accelerated run ends; past it ``follow_wall`` makes the clock
    fall back to real time so a replay can turn into a live run.
    """

    def __init__(self, start_ms: int, speed: float, *, wall: Clock | None = None) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 = as fast as possible)")
        self._wall = wall or WallClock()
        self._start_ms = start_ms
        self._speed = speed
        self._wall_start_ms = self._wall.now_ms()
        self._cursor_ms = start_ms

    @property
    def speed(self) -> float:
        """The acceleration factor (0 = unpaced)."""
        return self._speed

    def now_ms(self) -> int:
        """The simulated time now."""
        if self._speed == 0:
            return self._cursor_ms
        elapsed = self._wall.now_ms() - self._wall_start_ms
        return max(self._cursor_ms, self._start_ms + int(elapsed * self._speed))

    def sleep_until(self, ts_ms: int, stop: threading.Event | None = None) -> bool:
        """Wait (in wall time, scaled) until simulated time reaches ``ts_ms``."""
        if stop is not None and stop.is_set():
            return False
        if self._speed == 0:
            self._cursor_ms = max(self._cursor_ms, ts_ms)
            return True
        behind_ms = ts_ms - self.now_ms()
        ok = _wait(behind_ms / self._speed / 1000, stop)
        if ok:
            self._cursor_ms = max(self._cursor_ms, ts_ms)
        return ok

    def rebase(self, speed: float, at_ms: int | None = None) -> None:
        """Carry on at another speed (e.g. 1 for live), from ``at_ms`` or the current time.

        An accelerated clock runs ahead of the wall when publishing cannot keep up
        with its speed, so going live must restart from the wall's now, not its own.
        """
        now = self.now_ms() if at_ms is None else at_ms
        self._start_ms = now
        self._cursor_ms = now
        self._wall_start_ms = self._wall.now_ms()
        self._speed = speed


class ManualClock:
    """A clock that only moves when told: for tests."""

    def __init__(self, now_ms: int) -> None:
        self._now = now_ms

    def now_ms(self) -> int:
        """The time the test set."""
        return self._now

    def advance(self, ms: int) -> None:
        """Move forward by ``ms``."""
        self._now += ms

    def sleep_until(self, ts_ms: int, stop: threading.Event | None = None) -> bool:
        """Jump straight to ``ts_ms``."""
        if stop is not None and stop.is_set():
            return False
        self._now = max(self._now, ts_ms)
        return True
