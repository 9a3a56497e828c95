"""A smart unit door: its households come and go with the rhythm of the day."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any

from devices.contract import Community, DeviceRecord
from devices.simulation import DailyProfile, SimulatedDevice, weighted_choice

# Passages through a unit door by local hour: morning and evening peaks, quiet nights.
TRAFFIC = DailyProfile(
    [0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 1.0, 2.2, 2.0, 1.2, 1.0, 1.3,
     1.2, 0.9, 0.8, 0.9, 1.2, 2.2, 2.4, 1.8, 1.2, 0.8, 0.4, 0.2]
)  # fmt: skip
# Each person goes out and comes back about once a day; visitors and deliveries add a little.
PASSAGES_PER_PERSON_PER_DAY = 2.2
HOUSEHOLD_SIZES = (("1", 0.25), ("2", 0.4), ("3", 0.22), ("4", 0.13))
# People leave by the inside button; they come in mostly by face.
ENTRY_METHODS = (("face", 0.76), ("card", 0.12), ("app", 0.08), ("pin", 0.04))
EXIT_SHARE = 0.45
# A first try that fails, then the same person gets in: a face not matched (glasses, hat,
# poor light), an expired card (they then use their face), a mistyped PIN.
FIRST_TRY_FAILS = {
    "face": (0.03, "unknown_face", "face"),
    "card": (0.02, "expired_card", "face"),
    "pin": (0.08, "wrong_pin", "pin"),
}
HOLD_MEDIAN_S = 7.0
# The device's own "door open too long" threshold, and how often it repeats the event.
HELD_OPEN_AFTER_MS = 60_000
FORCED_OPEN_HOLD_MS = 40_000


@dataclass(frozen=True, slots=True)
class Household:
    """The people behind one flat of the unit, by their hashed resident ids."""

    residents: tuple[str, ...]


class SimulatedDoor(SimulatedDevice):
    """Unlocks, opens and closes for its unit's households; heartbeats every 60 s."""

    telemetry_interval_ms = 60_000

    def __init__(
        self, record: DeviceRecord, community: Community, rng: random.Random, start_ms: int
    ) -> None:
        super().__init__(record, community, rng, start_ms)
        count = int(record.attributes.get("unit_households", 10))
        self.households = [self._household(i) for i in range(count)]
        # A bigger household comes and goes more: entries pick the person, not the flat.
        self.residents = [r for h in self.households for r in h.residents]
        self.locked = True
        self.open = False
        self.rssi_dbm = rng.randint(-85, -55)
        self._passage = 0  # which passage the door is open for; a newer one takes over
        self._opened_at = 0
        self._openings = 0  # which opening of the leaf the held-open timer belongs to
        self._schedule_visit(start_ms)

    def _household(self, index: int) -> Household:
        size = int(weighted_choice(self.rng, HOUSEHOLD_SIZES))
        ids = (_resident_id(self.record.device_id, index, n) for n in range(size))
        return Household(tuple(ids))

    def telemetry(self, ts: int) -> dict[str, Any]:
        """Lock and leaf state, signal, enclosure temperature following the day."""
        hour = self.local_hour(ts)
        temp = 12 + 6 * math.sin((hour - 9) / 24 * 2 * math.pi) + self.rng.gauss(0, 0.3)
        rssi = max(-120, min(-30, self.rssi_dbm + int(self.rng.random() * 7) - 3))  # -3..3
        return {
            "locked": self.locked,
            "open": self.open,
            "rssi_dbm": rssi,
            "temp_c": round(temp, 1),
        }

    # --- everyday traffic -------------------------------------------------------------

    def _schedule_visit(self, after_ms: int) -> None:
        per_day = len(self.residents) * PASSAGES_PER_PERSON_PER_DAY
        self.at(TRAFFIC.next_arrival(self, after_ms, per_day, self.rng), self._visit)

    def _visit(self, ts: int) -> None:
        self._schedule_visit(ts)
        if not self.locked or self.open:  # someone is already passing; they go through together
            return
        if self.rng.random() < EXIT_SHARE:
            self._unlock(ts, "button", None)
            return
        method = weighted_choice(self.rng, ENTRY_METHODS)
        resident = self.rng.choice(self.residents)
        rate, reason, retry_method = FIRST_TRY_FAILS.get(method, (0.0, "", method))
        if self.rng.random() < rate:
            self.send_event(ts, "unlock_failed", method=method, reason=reason)
            retry = ts + self.rng.randint(3_000, 12_000)
            self.at(retry, lambda t: self._unlock(t, retry_method, resident))
            return
        self._unlock(ts, method, resident)

    def _unlock(
        self, ts: int, method: str, resident: str | None, hold_ms: int | None = None
    ) -> None:
        fields: dict[str, Any] = {"method": method}
        if resident is not None:
            fields["resident"] = resident
        self.send_event(ts, "unlock", **fields)
        self.locked = False
        self._passage += 1
        passage = self._passage
        opened = ts + self.rng.randint(800, 2_500)
        self.at(opened, lambda t: self._open(t, passage))
        if hold_ms is None:
            hold_ms = int(self.rng.lognormvariate(math.log(HOLD_MEDIAN_S), 0.4) * 1000)
        self.at(opened + hold_ms, lambda t: self._close(t, passage))

    def _open(self, ts: int, passage: int) -> None:
        if passage == self._passage:  # else a later passage took over the door
            self._leaf_opens(ts)

    def _leaf_opens(self, ts: int) -> None:
        if self.open:
            return
        self.open, self._opened_at = True, ts
        self._openings += 1
        opening = self._openings
        self.send_event(ts, "open")
        self.at(ts + HELD_OPEN_AFTER_MS, lambda t: self._check_held(t, opening))

    def _check_held(self, ts: int, opening: int) -> None:
        """The device's own timer: while the leaf stays open, say so every minute."""
        if self.open and opening == self._openings:
            self.send_event(ts, "held_open", duration_s=(ts - self._opened_at) // 1000)
            self.at(ts + HELD_OPEN_AFTER_MS, lambda t: self._check_held(t, opening))

    def _close(self, ts: int, passage: int) -> None:
        if passage != self._passage:  # a later passage (or a fault) holds the door now
            return
        if self.open:
            self.open = False
            self.send_event(ts, "close")
        self.locked = True

    # --- commands ---------------------------------------------------------------------

    def cmd_unlock(self, ts: int, args: dict[str, Any]) -> str | None:
        """Unlock remotely for ``duration_s``; someone walks through."""
        if not self.locked:
            return None
        self._unlock(ts, "remote", None, hold_ms=int(args["duration_s"]) * 1000)
        return None

    def cmd_lock(self, ts: int, args: dict[str, Any]) -> str | None:
        """Lock now (a door held open cannot lock)."""
        if self.open:
            return "door is open"
        self.locked = True
        return None

    # --- faults (scripted by scenarios) -----------------------------------------------

    def force_open(self, ts: int, hold_ms: int = FORCED_OPEN_HOLD_MS) -> None:
        """Someone forces the leaf open without an unlock; it swings shut after ``hold_ms``."""
        self._passage += 1
        passage = self._passage
        self.send_event(ts, "forced_open")
        self._leaf_opens(ts)
        self.at(ts + hold_ms, lambda t: self._close(t, passage))

    def tamper(self, ts: int) -> None:
        """Someone pries at the reader or the enclosure."""
        self.send_event(ts, "tamper")

    def hold_open(self, ts: int, duration_ms: int) -> None:
        """A resident lets themselves in and wedges the door open for ``duration_ms``."""
        resident = self.rng.choice(self.households[0].residents)
        self._unlock(ts, "face", resident, hold_ms=duration_ms)

    def fail_faces(self, ts: int, count: int, every_ms: int) -> None:
        """A stranger tries the face reader ``count`` times, ``every_ms`` apart."""
        for i in range(count):
            self.at(
                ts + i * every_ms,
                lambda t: self.send_event(t, "unlock_failed", method="face", reason="unknown_face"),
            )


def _resident_id(device_id: str, household: int, member: int) -> str:
    return "r" + hashlib.sha256(f"{device_id}:{household}:{member}".encode()).hexdigest()[:16]
