"""Charge points nobody registered, knocking at the door: a bounded, rate-limited list in
memory that operators can read, instead of a permanent fleet record for every id that
ever opened a connection or published a message. Registering the id (API) admits it."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

MAX_ENTRIES = 500
NEW_IDS_PER_SECOND = 20.0  # a flood of made-up ids cannot churn the list faster


class Strangers:
    def __init__(self, max_entries: int = MAX_ENTRIES,
                 new_per_second: float = NEW_IDS_PER_SECOND) -> None:
        self.max_entries = max_entries
        self.new_per_second = new_per_second
        self._entries: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self._tokens = new_per_second
        self._tokens_at = time.monotonic()
        self.ignored = 0  # knocks not listed because new ids came too fast
        self.evicted = 0

    def note(self, cp_id: str, via: str, address: str | None = None, **detail) -> None:
        now = time.time()
        with self._lock:
            entry = self._entries.get(cp_id)
            if entry is None:
                if not self._take_token():
                    self.ignored += 1
                    return
                entry = {"id": cp_id, "first_seen": now, "attempts": 0}
                self._entries[cp_id] = entry
                if len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
                    self.evicted += 1
            else:
                self._entries.move_to_end(cp_id)
            entry["attempts"] += 1
            entry["last_seen"] = now
            entry["via"] = via
            if address:
                entry["address"] = address
            entry.update(detail)

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.new_per_second,
                           self._tokens + (now - self._tokens_at) * self.new_per_second)
        self._tokens_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def get(self, cp_id: str) -> dict | None:
        with self._lock:
            entry = self._entries.get(cp_id)
            return dict(entry) if entry else None

    def forget(self, cp_id: str) -> None:
        with self._lock:
            self._entries.pop(cp_id, None)

    def all(self) -> list[dict]:
        with self._lock:
            return [dict(e) for e in reversed(self._entries.values())]

    def stats(self) -> dict:
        with self._lock:
            return {"listed": len(self._entries), "ignored": self.ignored,
                    "evicted": self.evicted}
