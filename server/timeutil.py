"""Time helpers: the store keeps UNIX seconds (UTC), the wire speaks ISO 8601."""

from __future__ import annotations

import time
from datetime import UTC, datetime

# Times accepted from outside (REST input, ThingSpeak writes): UNIX seconds from 1970 to
# the end of 2099. Anything else is a mistake or an attack, and breaks ISO formatting.
EARLIEST_TIME, LATEST_TIME = 0.0, 4102444799.0


def in_sane_range(epoch: float) -> bool:
    return EARLIEST_TIME <= epoch <= LATEST_TIME  # False for NaN too


def now() -> float:
    return time.time()


def to_iso(epoch: float | None, millis: bool = False) -> str | None:
    """UNIX seconds → ``2024-05-01T12:00:00Z`` (or with milliseconds)."""
    if epoch is None:
        return None
    dt = datetime.fromtimestamp(epoch, UTC)
    if millis:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value) -> float:
    """Parse an ISO 8601 string (``Z`` or offset), a MySQL-style ``YYYY-MM-DD HH:MM:SS``
    (taken as UTC, as ThingSpeak does without a timezone parameter) or UNIX seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if not text:
        raise ValueError("empty timestamp")
    try:
        return float(text)
    except ValueError:
        pass
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if " " in text and "T" not in text:
        text = text.replace(" ", "T", 1)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
