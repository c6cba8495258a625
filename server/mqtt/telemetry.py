"""The telemetry payload contract (ARCHITECTURE.md) as a JSON schema, and the per-station
loss accounting from the ``seq`` counter."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields

from jsonschema import Draft202012Validator

from server.validation import FastValidator

CHARGE_POINT_STATUSES = ["Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV",
                         "Finishing", "Reserved", "Unavailable", "Faulted"]
_number = {"type": "number"}
TELEMETRY_SCHEMA = {
    "type": "object",
    "required": ["ts", "seq"],
    "properties": {
        "ts": {"type": "number", "minimum": 0, "maximum": 4102444800},  # up to 2100
        "seq": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "t": _number, "rh": {"type": "number", "minimum": 0, "maximum": 100}, "tmcu": _number,
        "v": {"type": "number", "minimum": 0}, "a": _number, "w": _number, "wh": _number,
        "cp": {"type": "string", "enum": list("ABCDEF")},
        "st": {"type": "string", "enum": CHARGE_POINT_STATUSES},
        "lim": {"type": "number", "minimum": 0}, "rssi": _number,
        "heap": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "up": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
    },
}
# the schema uses only keywords that mean the same in draft 7, which the fast check reads
TELEMETRY_VALIDATOR = FastValidator(Draft202012Validator(TELEMETRY_SCHEMA),
                                    draft="http://json-schema.org/draft-07/schema#")


# How far back a message may arrive late (after newer ones) and still be told apart from a
# redelivered duplicate. QoS 1 keeps order on one connection, but not across reconnects and
# broker restarts: a station resending what was in flight after newer messages.
RECENT_WINDOW = 1024


class RecentKeys:
    """The last RECENT_WINDOW keys in arrival order, with an O(1) membership test (a
    deque alone is scanned on every message)."""

    def __init__(self, size: int = RECENT_WINDOW) -> None:
        self._order: deque = deque()
        self._keys: set = set()
        self._size = size

    def __contains__(self, key) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._order)

    def add(self, key) -> None:
        if key in self._keys:
            return
        if len(self._order) >= self._size:
            self._keys.discard(self._order.popleft())
        self._order.append(key)
        self._keys.add(key)

    def clear(self) -> None:
        self._order.clear()
        self._keys.clear()


@dataclass
class StationTelemetryStats:
    cp_id: str
    received: int = 0
    lost: int = 0
    duplicates: int = 0
    reboots: int = 0
    invalid: int = 0
    last_seq: int | None = None
    last_up: int | None = None
    updated_at: float | None = None
    # (seq, ts, up) of the messages accepted lately (since this process started), oldest
    # first; not persisted
    recent: RecentKeys = field(default_factory=RecentKeys, repr=False)

    def observe(self, seq: int, up: int | None, now: float, ts: float | None = None) -> bool:
        """Account for one valid message; returns False for a duplicate (QoS 1 redelivery:
        the same seq, ts and up as a message accepted lately; a station that rebooted
        numbers its messages from 0/1 again, with a later ts, and those are new).

        A seq below the newest one that was not seen lately arrived late: it is accepted,
        and no longer counted as lost. A seq back at 0/1, or an uptime that went backwards
        (unless the seq is one that may arrive late), is a reboot, not a loss.
        """
        self.updated_at = now
        last = self.last_seq
        key = (seq, ts, up)
        if key in self.recent:
            self.duplicates += 1
            return False
        late = last is not None and 1 < seq < last and last - seq <= RECENT_WINDOW
        rebooted = last is not None and not late and (
            (seq <= 1 and seq < last)
            or (up is not None and self.last_up is not None and up < self.last_up))
        if late:
            self.received += 1
            self.lost = max(0, self.lost - 1)
            self.recent.add(key)
            return True
        if last is not None and not rebooted and seq <= last:
            self.duplicates += 1
            return False
        if rebooted:
            self.reboots += 1
            self.recent.clear()
        elif last is not None and seq > last + 1:
            self.lost += seq - last - 1
        self.received += 1
        self.last_seq = seq
        self.recent.add(key)
        if up is not None:
            self.last_up = up
        return True

    def as_row(self) -> dict:
        return {name: getattr(self, name) for name in PERSISTED_FIELDS}


PERSISTED_FIELDS = tuple(f.name for f in fields(StationTelemetryStats) if f.name != "recent")
