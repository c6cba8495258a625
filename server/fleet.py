"""The fleet registry: every charge point's record, connectors and presence, kept in
memory for the hot paths and persisted through the store. Every presence change is an
event with a timestamp."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from server.station_keys import StationKeys, key_problem
from server.store import Store
from server.strangers import Strangers

log = logging.getLogger(__name__)

REGISTRATION_STATES = ("Accepted", "Pending", "Rejected")
# last_seen is persisted at most this often per charge point; presence changes always.
LAST_SEEN_PERSIST_SECONDS = 60.0


class Fleet:
    def __init__(self, store: Store, keys: StationKeys | None = None) -> None:
        self.store = store
        self.keys = keys or StationKeys()
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, Any]] = {}
        # cp_id → connector_id → record: a station's listing touches only its own
        self._connectors: dict[str, dict[int, dict[str, Any]]] = {}
        self._persisted_seen: dict[str, float] = {}
        self.strangers = Strangers()  # ids nobody registered: no record, just a short list
        self._key_listeners: list = []
        self._identity_listeners: list = []
        self._state_listeners: list = []
        for record in store.load_chargepoints():
            # Nobody is connected to a process that just started.
            record["ocpp_online"] = 0
            record["telemetry_online"] = 0
            self._records[record["id"]] = record
        for conn in store.load_connectors():
            self._connectors.setdefault(conn["cp_id"], {})[conn["connector_id"]] = conn

    # Reads ---------------------------------------------------------------------
    def get(self, cp_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._records.get(cp_id)
            return dict(record) if record else None

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in sorted(self._records.values(), key=lambda r: r["id"])]

    def connectors(self, cp_id: str) -> list[dict[str, Any]]:
        with self._lock:
            own = self._connectors.get(cp_id) or {}
            return [dict(own[n]) for n in sorted(own)]

    def is_registered(self, cp_id: str) -> bool:
        record = self._records.get(cp_id)
        return bool(record and record.get("registration"))

    # Key changes ---------------------------------------------------------------
    def on_key_change(self, listener) -> None:
        """Call `listener(cp_id, plaintext_key_or_None)` whenever a station's key is set
        (the plaintext exists only then), cleared, or the station deleted."""
        self._key_listeners.append(listener)

    @staticmethod
    def _tell(listeners: list, cp_id: str, value) -> None:
        """Call every listener; one that fails is logged and does not stop the others."""
        for listener in listeners:
            try:
                listener(cp_id, value)
            except Exception:
                log.exception("listener %r failed for %s", listener, cp_id)

    def _key_changed(self, cp_id: str, key: str | None) -> None:
        self._tell(self._key_listeners, cp_id, key)

    def on_identity_change(self, listener) -> None:
        """Call `listener(cp_id, why)` when an operator changes who may act as a station:
        its key set, replaced or cleared, its registration state changed, or the station
        deleted. Its open sessions were admitted under the old identity and must end."""
        self._identity_listeners.append(listener)

    def _identity_changed(self, cp_id: str, why: str) -> None:
        self._tell(self._identity_listeners, cp_id, why)

    def on_registration_change(self, listener) -> None:
        """Call `listener(cp_id, registration)` whenever a station's registration state is
        set to another value (the broker lets only Accepted stations in)."""
        self._state_listeners.append(listener)

    # Writes --------------------------------------------------------------------
    def _persist(self, record: dict[str, Any]) -> None:
        self._persisted_seen[record["id"]] = record.get("last_seen") or 0
        self.store.save_chargepoint(record)

    def ensure(self, cp_id: str) -> dict[str, Any]:
        """The record for cp_id, created unregistered (registration NULL) if new."""
        with self._lock:
            record = self._records.get(cp_id)
            if record is None:
                record = {"id": cp_id, "registration": None, "ocpp_online": 0,
                          "telemetry_online": 0, "created_at": time.time()}
                self._records[cp_id] = record
                self._persist(record)
            return record

    def register(self, cp_id: str, registration: str = "Accepted", auth_key: str | None = None,
                 description: str | None = None, clear_auth_key: bool = False,
                 by_its_own_session: bool = False) -> dict[str, Any]:
        """Register or change a station. A new or cleared key, or a state other than
        Accepted, ends its open sessions (on_identity_change), unless the change is the
        station's own auto-registration made through the very session that presented the
        key."""
        if registration not in REGISTRATION_STATES:
            raise ValueError(f"registration must be one of {', '.join(REGISTRATION_STATES)}")
        digest = None
        if auth_key is not None:
            problem = key_problem(auth_key)
            if problem:
                raise ValueError(problem)
            digest = self.keys.hash_key(cp_id, auth_key)
        with self._lock:
            record = self.ensure(cp_id)
            self.strangers.forget(cp_id)
            previous = record.get("registration")
            record["registration"] = registration
            if digest is not None:
                record["auth_key_hash"] = digest
            elif clear_auth_key:
                record["auth_key_hash"] = None
            if description is not None:
                record["description"] = description
            self._persist(record)
            if previous != registration:
                self.event(cp_id, "registration", previous=previous, registration=registration)
            key_changed = auth_key is not None or clear_auth_key
            if key_changed:
                self._key_changed(cp_id, auth_key)
            result = dict(record)
        # a session keeps what it was admitted with only while that still holds: a new
        # or cleared key, or a state that grants less, ends it (becoming Accepted does
        # not: the open session's next BootNotification is answered Accepted, the OCPP
        # way for a Pending station)
        if previous != registration:
            self._tell(self._state_listeners, cp_id, registration)
        demoted = previous != registration and registration != "Accepted"
        if not by_its_own_session and (key_changed or demoted):
            self._identity_changed(cp_id, "its key changed" if key_changed
                                   else f"its registration is now {registration}")
        return result

    def set_auth_key(self, cp_id: str, auth_key: str) -> bool:
        """Store a new AuthorizationKey (rotation); False if the charge point is gone."""
        problem = key_problem(auth_key)
        if problem:
            raise ValueError(problem)
        digest = self.keys.hash_key(cp_id, auth_key)
        with self._lock:
            record = self._records.get(cp_id)
            if record is None:
                return False
            record["auth_key_hash"] = digest
            self._persist(record)
        self.event(cp_id, "auth_key_changed")
        self._key_changed(cp_id, auth_key)
        return True

    def upgrade_key_hash(self, cp_id: str, old: str, new: str) -> None:
        """Replace a legacy hash after a successful login, unless it changed meanwhile."""
        with self._lock:
            record = self._records.get(cp_id)
            if record is None or record.get("auth_key_hash") != old:
                return
            record["auth_key_hash"] = new
            self._persist(record)

    def update(self, cp_id: str, **fields: Any) -> bool:
        """Change fields of an existing record; False (nothing written) for a station that
        has none (deleted while one of its messages was on its way)."""
        with self._lock:
            record = self._records.get(cp_id)
            if record is None:
                return False
            record.update(fields)
            self._persist(record)
            return True

    def delete(self, cp_id: str) -> bool:
        with self._lock:
            if self._records.pop(cp_id, None) is None:
                return False
            self._connectors.pop(cp_id, None)
            self.store.delete_chargepoint(cp_id)
            self.event(cp_id, "deleted")
            self._key_changed(cp_id, None)
        self._identity_changed(cp_id, "it was deleted")
        return True

    def touch(self, cp_id: str, now: float) -> None:
        """Record activity; persisted lazily (presence changes are persisted at once)."""
        record = self._records.get(cp_id)
        if record is None:
            return
        record["last_seen"] = now
        if now - self._persisted_seen.get(cp_id, 0) >= LAST_SEEN_PERSIST_SECONDS:
            with self._lock:
                self._persist(record)

    def set_ocpp_online(self, cp_id: str, online: bool, reason: str, now: float | None = None) -> bool:
        now = now or time.time()
        with self._lock:
            record = self._records.get(cp_id)
            if record is None:  # a stranger: no record, no events
                return False
            if bool(record.get("ocpp_online")) == online:
                return False
            record["ocpp_online"] = int(online)
            if online:
                record["last_seen"] = now
            self._persist(record)
            self.event(cp_id, "ocpp_online" if online else "ocpp_offline", now=now, reason=reason)
            return True

    def set_telemetry_online(self, cp_id: str, online: bool, reason: str,
                             now: float | None = None) -> bool:
        now = now or time.time()
        with self._lock:
            record = self._records.get(cp_id)
            if record is None:
                self.strangers.note(cp_id, "mqtt")
                return False
            if online:
                record["telemetry_last_seen"] = now
            if bool(record.get("telemetry_online")) == online:
                return False
            record["telemetry_online"] = int(online)
            self._persist(record)
            self.event(cp_id, "telemetry_online" if online else "telemetry_offline", now=now,
                       reason=reason)
            return True

    def set_connector_status(self, status: dict[str, Any]):
        """Store a StatusNotification; returns the store's future of its history row."""
        with self._lock:
            own = self._connectors.setdefault(status["cp_id"], {})
            current = own.get(status["connector_id"])
            changed = (current is None or current.get("status") != status["status"]
                       or current.get("error_code") != status.get("error_code"))
            own[status["connector_id"]] = {
                "cp_id": status["cp_id"], "connector_id": status["connector_id"],
                "status": status["status"], "error_code": status.get("error_code"),
                "info": status.get("info"), "vendor_id": status.get("vendor_id"),
                "vendor_error_code": status.get("vendor_error_code"),
                "status_ts": status.get("ts"), "updated_at": status["received_at"]}
        written = self.store.save_connector_status(status)
        if changed:
            self.event(status["cp_id"], "status", now=status["received_at"],
                       connector_id=status["connector_id"], status=status["status"],
                       error_code=status.get("error_code"))
        return written

    def event(self, cp_id: str | None, kind: str, now: float | None = None, **detail: Any) -> None:
        ts = now or time.time()
        log.info("event %s %s %s", cp_id, kind, detail or "")
        self.store.add_event(ts, cp_id, kind, detail)
