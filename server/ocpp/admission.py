"""Bounds on what an address can cost the OCPP endpoint before it has proven anything:
a token bucket of handshakes per remote address, a cap on open connections per address
and a cap on handshakes being verified at once (the KDF runs for those)."""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict

from websockets.protocol import State

# Remembered addresses (token buckets); the least recently seen is forgotten beyond this.
MAX_TRACKED_ADDRESSES = 100_000


class HandshakeLimiter:
    def __init__(self, ocpp_config: dict) -> None:
        self.config = ocpp_config
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._open: dict[str, weakref.WeakSet] = {}
        self.verifying = 0

    def allow_handshake(self, address: str, now: float | None = None) -> bool:
        """Take one token from the address's bucket; False when it is empty."""
        rate = self.config["handshake_rate_per_address"]
        burst = self.config["handshake_burst_per_address"]
        if rate <= 0 or burst <= 0:
            return True
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(address, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[address] = (tokens, now)
        while len(self._buckets) > MAX_TRACKED_ADDRESSES:
            self._buckets.popitem(last=False)
        return allowed

    def open_connections(self, address: str) -> int:
        connections = self._open.get(address)
        if not connections:
            self._open.pop(address, None)
            return 0
        return sum(1 for c in connections if c.state is not State.CLOSED)

    def allow_connection(self, address: str) -> bool:
        limit = self.config["max_connections_per_address"]
        return limit <= 0 or self.open_connections(address) < limit

    def track(self, address: str, connection) -> None:
        """Count ``connection`` against its address until it is closed (weakly held)."""
        self._open.setdefault(address, weakref.WeakSet()).add(connection)

    def begin_verification(self) -> bool:
        limit = self.config["max_unauthenticated_handshakes"]
        if limit > 0 and self.verifying >= limit:
            return False
        self.verifying += 1
        return True

    def end_verification(self) -> None:
        self.verifying -= 1
