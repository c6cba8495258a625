"""Forward station telemetry to its ThingSpeak channel within the 15 s rule.

Targets must be public addresses (checked when configured and again at every connect,
against DNS rebinding) unless ``thingspeak.allow_private_targets`` is set.

Telemetry is averaged over windows of ``thingspeak.bridge_interval`` seconds; each closed
window becomes one entry. At most one request per channel per interval: a single waiting
entry goes to ``/update``; a backlog (after a gap: refusal, outage, rate limit) goes in one
``bulk_update.json`` with absolute ``created_at`` timestamps.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass, field

from server.mqtt.telemetry import CHARGE_POINT_STATUSES
from server.net_guard import check_url, guarded_opener
from server.store import Store
from server.thingspeak.channels import BULK_MAX_ENTRIES
from server.timeutil import to_iso

log = logging.getLogger(__name__)

# field → (telemetry key, how a window combines it)
FIELD_MAP = {
    "field1": ("t", "mean"), "field2": ("rh", "mean"), "field3": ("v", "mean"),
    "field4": ("a", "mean"), "field5": ("w", "mean"), "field6": ("wh", "last"),
    "field7": ("st", "last"), "field8": ("tmcu", "mean"),
}


def window_entry(samples: list[dict]) -> dict:
    """One ThingSpeak entry from a window of telemetry rows (ARCHITECTURE.md mapping)."""
    entry: dict = {"created_at": to_iso(samples[-1]["ts"])}
    for name, (key, how) in FIELD_MAP.items():
        values = [s[key] for s in samples if s.get(key) is not None]
        if not values:
            continue
        if key == "st":
            entry[name] = CHARGE_POINT_STATUSES.index(values[-1])
        elif key == "wh":
            entry[name] = round(values[-1] / 1000.0, 4)  # Wh register → kWh
        elif how == "mean":
            entry[name] = round(sum(values) / len(values), 3)
    statuses = [s["st"] for s in samples if s.get("st")]
    if statuses:
        entry["status"] = statuses[-1]
    return entry


@dataclass
class BridgeTarget:
    cp_id: str
    url: str
    channel: int
    write_key: str
    enabled: bool = True
    samples: list = field(default_factory=list)
    window_started: float | None = None
    backlog: deque = field(default_factory=deque)
    last_attempt: float | None = None
    requests: int = 0
    entries_sent: int = 0
    bulk_requests: int = 0
    failures: int = 0
    dropped: int = 0
    last_error: str | None = None

    def public(self) -> dict:
        return {"cp_id": self.cp_id, "url": self.url, "channel": self.channel,
                "enabled": self.enabled, "backlog": len(self.backlog),
                "requests": self.requests, "bulk_requests": self.bulk_requests,
                "entries_sent": self.entries_sent, "failures": self.failures,
                "dropped": self.dropped, "last_error": self.last_error}


class ThingSpeakBridge:
    def __init__(self, config, store: Store) -> None:
        self.config = config
        self.store = store
        self._lock = threading.Lock()
        self._targets: dict[str, BridgeTarget] = {
            row["cp_id"]: BridgeTarget(row["cp_id"], row["url"], row["channel"],
                                       row["write_key"], row["enabled"])
            for row in store.load_bridges()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.allow_private = bool(config.thingspeak["allow_private_targets"])
        self._opener = guarded_opener(self.allow_private)
        if self.allow_private:
            log.warning("SECURITY: thingspeak.allow_private_targets is true: the ThingSpeak "
                        "bridge may post to loopback and private addresses (SSRF). Lab use only.")

    # Configuration -----------------------------------------------------------
    def configure(self, cp_id: str, url: str, channel: int, write_key: str,
                  enabled: bool = True) -> dict:
        check_url(url, self.allow_private)  # raises TargetRefused, a ValueError
        with self._lock:
            target = self._targets.get(cp_id)
            if target is None:
                target = self._targets[cp_id] = BridgeTarget(cp_id, url, channel, write_key, enabled)
            else:
                target.url, target.channel = url, channel
                target.write_key, target.enabled = write_key, enabled
            self.store.save_bridge({"cp_id": cp_id, "url": url, "channel": channel,
                                    "write_key": write_key, "enabled": enabled})
            return target.public()

    def remove(self, cp_id: str) -> bool:
        with self._lock:
            if self._targets.pop(cp_id, None) is None:
                return False
        self.store.delete_bridge(cp_id)
        return True

    def targets(self) -> list[dict]:
        with self._lock:
            return [t.public() for _, t in sorted(self._targets.items())]

    def target(self, cp_id: str) -> dict | None:
        with self._lock:
            target = self._targets.get(cp_id)
            return target.public() if target else None

    # Data path -------------------------------------------------------------------
    def feed(self, cp_id: str, row: dict) -> None:
        """Called by the MQTT ingest for every accepted telemetry row."""
        with self._lock:
            target = self._targets.get(cp_id)
            if target is None or not target.enabled:
                return
            if not target.samples:
                target.window_started = time.monotonic()
            target.samples.append(row)

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        interval = self.config.thingspeak["bridge_interval"]
        max_backlog = self.config.thingspeak["bridge_max_backlog"]
        due = []
        with self._lock:
            for target in self._targets.values():
                if target.samples and now - target.window_started >= interval:
                    target.backlog.append(window_entry(target.samples))
                    target.samples = []
                    while len(target.backlog) > max_backlog:
                        target.backlog.popleft()
                        target.dropped += 1
                if target.backlog and (target.last_attempt is None
                                       or now - target.last_attempt >= interval):
                    target.last_attempt = now
                    due.append((target, list(target.backlog)[:BULK_MAX_ENTRIES]))
        for target, entries in due:
            self._send(target, entries)

    def _send(self, target: BridgeTarget, entries: list[dict]) -> None:
        timeout = self.config.thingspeak["bridge_timeout"]
        base = target.url.rstrip("/")
        target.requests += 1
        try:
            if len(entries) == 1:
                form = {"api_key": target.write_key, **entries[0]}
                body = urllib.parse.urlencode(form).encode()
                request = urllib.request.Request(f"{base}/update", data=body, method="POST")
                with self._opener.open(request, timeout=timeout) as response:
                    answer = response.read().decode().strip()
                if not answer.isdigit() or int(answer) == 0:
                    raise RuntimeError(f"update not inserted (answer {answer!r})")
            else:
                target.bulk_requests += 1
                body = json.dumps({"write_api_key": target.write_key, "updates": entries}).encode()
                request = urllib.request.Request(
                    f"{base}/channels/{target.channel}/bulk_update.json", data=body, method="POST",
                    headers={"Content-Type": "application/json"})
                with self._opener.open(request, timeout=timeout) as response:
                    answer = json.loads(response.read().decode() or "{}")
                if answer.get("success") is not True:
                    raise RuntimeError(f"bulk update refused: {answer}")
        except (OSError, ValueError, RuntimeError, urllib.error.URLError) as exc:
            with self._lock:
                target.failures += 1
                target.last_error = str(exc)
            log.warning("ThingSpeak bridge %s → channel %s: %s", target.cp_id, target.channel, exc)
            return
        with self._lock:
            for _ in entries:
                target.backlog.popleft()
            target.entries_sent += len(entries)
            target.last_error = None

    # Thread ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="thingspeak-bridge", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = self.config.thingspeak["bridge_tick"]
        while not self._stop.wait(tick):
            try:
                self.tick()
            except Exception:
                log.exception("ThingSpeak bridge tick failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
