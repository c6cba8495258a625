"""ThingSpeak-compatible channels: keys, entry ids allocated in memory (consistent with
the store), the one-update-per-15-s rule (configurable), feed reads in ThingSpeak's shapes."""

from __future__ import annotations

import secrets
import string
import threading
import time
from typing import Any

from server.store import Store
from server.timeutil import in_sane_range, parse_time, to_iso

FIELDS = tuple(f"field{n}" for n in range(1, 9))
BULK_MAX_ENTRIES = 960
DEFAULT_FIELD_NAMES = ["Temperature", "Humidity", "Voltage", "Current", "Power", "Energy",
                       "Status", "MCU temperature"]
_KEY_ALPHABET = string.ascii_uppercase + string.digits


def new_api_key() -> str:
    return "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))


class WriteRefused(Exception):
    """Not inserted; ``status`` is the HTTP status ThingSpeak uses for bulk writes."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(value)
    return str(value)


class ChannelService:
    def __init__(self, config, store: Store) -> None:
        self.config = config
        self.store = store
        self._lock = threading.Lock()
        self._channels: dict[int, dict] = {c["id"]: c for c in store.load_ts_channels()}
        self._last_write: dict[int, float] = {}

    # Channel management ------------------------------------------------------
    def create(self, name: str, description: str = "", field_names: list | None = None,
               public: bool = False, write_key: str | None = None, read_key: str | None = None,
               latitude: str | None = None, longitude: str | None = None,
               elevation: str | None = None, channel_id: int | None = None) -> dict:
        names = list(field_names if field_names is not None else DEFAULT_FIELD_NAMES)
        names = (names + [None] * 8)[:8]
        now = time.time()
        with self._lock:
            if channel_id is None:
                channel_id = max(self._channels, default=0) + 1
            elif channel_id in self._channels:
                raise ValueError(f"channel {channel_id} exists")
            write_key = write_key or new_api_key()
            if any(c["write_key"] == write_key for c in self._channels.values()):
                raise ValueError("write key already used by another channel")
            channel = {"id": channel_id, "name": name, "description": description or "",
                       "write_key": write_key, "read_key": read_key or new_api_key(),
                       "public": bool(public), "field_names": names, "latitude": latitude,
                       "longitude": longitude, "elevation": elevation, "created_at": now,
                       "updated_at": now, "last_entry_id": 0}
            self._channels[channel_id] = channel
            self.store.save_ts_channel(channel)
            return dict(channel)

    def regenerate_keys(self, channel_id: int, which: set[str]) -> dict | None:
        """Replace the write and/or read key with new random ones; None if no channel."""
        with self._lock:
            channel = self._channels.get(channel_id)
            if channel is None:
                return None
            if "write" in which:
                used = {c["write_key"] for c in self._channels.values()}
                key = new_api_key()
                while key in used:
                    key = new_api_key()
                channel["write_key"] = key
            if "read" in which:
                channel["read_key"] = new_api_key()
            channel["updated_at"] = time.time()
            self.store.save_ts_channel(channel)
            return dict(channel)

    def get(self, channel_id: int) -> dict | None:
        with self._lock:
            channel = self._channels.get(channel_id)
            return dict(channel) if channel else None

    def all(self) -> list[dict]:
        with self._lock:
            return [dict(c) for _, c in sorted(self._channels.items())]

    def delete(self, channel_id: int) -> bool:
        with self._lock:
            if self._channels.pop(channel_id, None) is None:
                return False
            self.store.delete_ts_channel(channel_id)
            return True

    def by_write_key(self, key: str | None) -> dict | None:
        if not key:
            return None
        with self._lock:
            for channel in self._channels.values():
                if secrets.compare_digest(channel["write_key"], key):
                    return channel
        return None

    def can_read(self, channel: dict, key: str | None) -> bool:
        return channel["public"] or (key is not None and (
            secrets.compare_digest(channel["read_key"], key)
            or secrets.compare_digest(channel["write_key"], key)))

    # Writes --------------------------------------------------------------------
    def _rate_limited(self, channel_id: int, now: float) -> bool:
        ts = self.config.thingspeak
        if not ts["rate_limit"]:
            return False
        last = self._last_write.get(channel_id)
        return last is not None and now - last < ts["min_interval"]

    @staticmethod
    def _entry(values: dict, created_at: float) -> dict:
        entry = {"created_at": created_at}
        for name in FIELDS:
            entry[name] = _text(values.get(name))
        entry["status"] = _text(values.get("status"))
        entry["latitude"] = _text(values.get("lat", values.get("latitude")))
        entry["longitude"] = _text(values.get("long", values.get("longitude")))
        entry["elevation"] = _text(values.get("elevation"))
        return entry

    def write(self, api_key: str | None, values: dict) -> tuple[dict, dict]:
        """One update (``/update``); returns (channel, entry) or raises WriteRefused."""
        self._refuse_while_store_fails()
        now = time.time()
        created_at = now
        if values.get("created_at"):
            try:
                created_at = parse_time(values["created_at"])
                if not in_sane_range(created_at):
                    raise ValueError("created_at out of range")
            except ValueError:
                raise WriteRefused(400, "error_bad_request", "created_at is not a date") from None
        with self._lock:
            channel = self._by_write_key_locked(api_key)
            if self._rate_limited(channel["id"], now):
                raise WriteRefused(429, "error_too_many_requests",
                                   "rate limit: one update per channel every "
                                   f"{self.config.thingspeak['min_interval']:g} s")
            self._last_write[channel["id"]] = now
            entry = self._entry(values, created_at)
            channel["last_entry_id"] += 1
            channel["updated_at"] = now
            entry["entry_id"] = channel["last_entry_id"]
            written = self.store.add_ts_feeds(channel["id"], [entry])
            self.store.save_ts_channel(channel)
        self._committed(written)
        return dict(channel), entry

    def _refuse_while_store_fails(self) -> None:
        if self.store.failure is not None:
            raise WriteRefused(503, "error_service_unavailable", "the store cannot commit right now")

    def _committed(self, written) -> None:
        """An entry id is answered only once the entry is committed."""
        try:
            written.result(self.config.store["commit_timeout"])
        except Exception as exc:
            raise WriteRefused(503, "error_service_unavailable",
                               "the store cannot commit right now") from exc

    def _by_write_key_locked(self, key: str | None) -> dict:
        for channel in self._channels.values():
            if key and secrets.compare_digest(channel["write_key"], key):
                return channel
        raise WriteRefused(401, "error_auth_required", "Authorization Required")

    def bulk_write(self, channel_id: int, api_key: str | None, updates: Any) -> int:
        """``bulk_update.json``; returns the number of entries inserted.

        ``delta_t`` entries are placed so that each is delta_t seconds after the one
        before it and the last lands at the time of the request.
        """
        self._refuse_while_store_fails()
        if not isinstance(updates, list) or not updates:
            raise WriteRefused(400, "error_bad_request", "updates must be a non-empty array")
        if len(updates) > BULK_MAX_ENTRIES:
            raise WriteRefused(413, "error_too_many_entries",
                               f"at most {BULK_MAX_ENTRIES} updates per bulk update")
        now = time.time()
        times: list[float | None] = []
        for update in updates:
            if not isinstance(update, dict):
                raise WriteRefused(400, "error_bad_request", "each update must be an object")
            if "created_at" in update:
                try:
                    times.append(parse_time(update["created_at"]))
                except ValueError:
                    raise WriteRefused(400, "error_bad_request", "bad created_at") from None
            elif "delta_t" in update:
                times.append(None)
            else:
                raise WriteRefused(400, "error_bad_request", "each update needs created_at or delta_t")
        # Resolve relative times backwards from the request time.
        cursor = now
        for i in range(len(updates) - 1, -1, -1):
            if times[i] is None:
                times[i] = cursor
                try:
                    cursor -= float(updates[i]["delta_t"])
                except (TypeError, ValueError):
                    raise WriteRefused(400, "error_bad_request", "delta_t must be a number") from None
            else:
                cursor = times[i]
        if not all(in_sane_range(t) for t in times):
            raise WriteRefused(400, "error_bad_request", "a time is before 1970 or after 2099")
        with self._lock:
            channel = self._channels.get(channel_id)
            if channel is None:
                raise WriteRefused(404, "error_resource_not_found", "Resource Not Found")
            if not api_key or not secrets.compare_digest(channel["write_key"], api_key):
                raise WriteRefused(401, "error_auth_required", "Authorization Required")
            if self._rate_limited(channel_id, now):
                raise WriteRefused(429, "error_too_many_requests", "Too Many Requests")
            self._last_write[channel_id] = now
            entries = []
            for update, created_at in sorted(zip(updates, times), key=lambda p: p[1]):
                entry = self._entry(update, created_at)
                channel["last_entry_id"] += 1
                entry["entry_id"] = channel["last_entry_id"]
                entries.append(entry)
            channel["updated_at"] = now
            written = self.store.add_ts_feeds(channel_id, entries)
            self.store.save_ts_channel(channel)
        self._committed(written)
        return len(entries)

    # Reads in ThingSpeak's shapes -----------------------------------------------
    @staticmethod
    def channel_json(channel: dict) -> dict:
        out = {"id": channel["id"], "name": channel["name"],
               "description": channel["description"],
               "latitude": channel["latitude"] or "0.0",
               "longitude": channel["longitude"] or "0.0"}
        for name, label in zip(FIELDS, channel["field_names"]):
            if label:
                out[name] = label
        out["created_at"] = to_iso(channel["created_at"])
        out["updated_at"] = to_iso(channel["updated_at"])
        out["last_entry_id"] = channel["last_entry_id"] or None
        return out

    @staticmethod
    def feed_json(channel: dict, row: dict, fields: tuple[str, ...] | None = None,
                  status: bool = False, location: bool = False) -> dict:
        out = {"created_at": to_iso(row["created_at"]), "entry_id": row["entry_id"]}
        enabled = fields or tuple(n for n, label in zip(FIELDS, channel["field_names"]) if label)
        for name in enabled:
            out[name] = row.get(name)
        if location:
            out["latitude"] = row.get("latitude")
            out["longitude"] = row.get("longitude")
            out["elevation"] = row.get("elevation")
        if status:
            out["status"] = row.get("status")
        return out

    @staticmethod
    def update_json(channel: dict, entry: dict) -> dict:
        """The ``/update.json`` answer: the created entry with every field."""
        out = {"channel_id": channel["id"], "created_at": to_iso(entry["created_at"]),
               "entry_id": entry["entry_id"]}
        for name in FIELDS:
            out[name] = entry.get(name)
        for name in ("latitude", "longitude", "elevation", "status"):
            out[name] = entry.get(name)
        return out
