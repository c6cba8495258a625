"""MQTT ingest: subscribes ``picocharge/+/telemetry`` and ``picocharge/+/state`` with QoS 1
on a persistent session (and takes the reports a station sends inside its OCPP session as
DataTransfer, ``handle_ocpp``: the same pipeline), validates every payload (bad ones are counted and logged, never
fatal), accounts per-station loss from ``seq``, and hands rows to the batching store.

A telemetry message is acknowledged to the broker (PUBACK) only once its row is committed,
so a crash between receipt and commit makes the broker deliver it again to the persistent
session instead of losing it; the ``seq`` accounting drops the redelivered duplicates (a
duplicate is acknowledged only once everything queued before it is committed). While the
store cannot commit, rows are held by the store and nothing is acknowledged, so the
broker's in-flight window bounds what waits in memory. An acknowledgement is sent only on
the connection that received the message: after a reconnect the broker redelivers."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from jsonschema.exceptions import best_match

from server.fleet import Fleet
from server.mqtt.pollloop import PollLoop
from server.mqtt.telemetry import TELEMETRY_VALIDATOR, StationTelemetryStats
from server.store import Store
from server.store.sqlite import TELEMETRY_COLUMNS

log = logging.getLogger(__name__)


def parse_broker_url(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"unsupported MQTT URL scheme {parts.scheme!r} (use mqtt:// or mqtts://)")
    tls = parts.scheme in ("mqtts", "ssl")
    return {"host": parts.hostname or "127.0.0.1", "port": parts.port or (8883 if tls else 1883),
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None, "tls": tls}


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


class MqttIngest:
    def __init__(self, config, store: Store, fleet: Fleet, on_telemetry=None) -> None:
        self.config = config
        self.store = store
        self.fleet = fleet
        self.on_telemetry = on_telemetry  # e.g. the ThingSpeak bridge
        self.prefix = config.mqtt["topic_prefix"]
        self.max_payload = config.mqtt["max_payload_bytes"]
        self.counters: Counter = Counter()
        self.stations: dict[str, StationTelemetryStats] = {
            row["cp_id"]: StationTelemetryStats(**row) for row in store.load_telemetry_stats()}
        # (seq, up) of each station's newest committed row. The persisted stats never run
        # ahead of it: after a crash, a redelivered message whose row was not committed
        # must not be taken for a duplicate (it would be acknowledged and lost).
        self._committed: dict[str, tuple] = {
            cp: (s.last_seq, s.last_up) for cp, s in self.stations.items()}
        self.ready = threading.Event()
        self.client: mqtt.Client | None = None
        self.loop: PollLoop | None = None
        self.broker: dict | None = None
        self._generation = 0  # bumped on every (re)connect: message ids are per connection
        # the telemetry pipeline runs on paho's thread (MQTT) and on the OCPP loop
        # (DataTransfer), its commit callbacks on the store's writer thread
        self._lock = threading.RLock()
        # stations whose telemetry came inside OCPP: no last will tells when it stops, the
        # OCPP connection closing does (server/ocpp/central.py)
        self.via_ocpp: set[str] = set()

    # Lifecycle ---------------------------------------------------------------
    def start(self, broker: dict, wait: float = 15.0) -> None:
        self.broker = broker
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=broker.get("client_id") or self.config.mqtt["client_id"],
                             clean_session=False,
                             manual_ack=True)
        if broker.get("username"):
            client.username_pw_set(broker["username"], broker.get("password"))
        if broker.get("tls"):
            client.tls_set()
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 30)
        self.client = client
        client.connect_async(broker["host"], broker["port"], keepalive=30)
        self.loop = PollLoop(client, "mqtt-ingest", 1, 30).start()
        if wait and not self.ready.wait(wait):
            log.warning("MQTT ingest not subscribed yet after %.0f s (broker %s:%s); retrying "
                        "in the background", wait, broker["host"], broker["port"])

    def stop(self) -> None:
        if self.client is None:
            return
        self.loop.stop()
        self.client = None

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT connect refused: %s", reason_code)
            return
        self.counters["connects"] += 1
        self._generation += 1
        client.subscribe([(f"{self.prefix}/+/telemetry", 1), (f"{self.prefix}/+/state", 1)])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        log.info("MQTT ingest subscribed (%s)", ", ".join(str(c) for c in reason_codes))
        self.ready.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.ready.clear()
        if reason_code != 0:
            log.warning("MQTT ingest disconnected: %s", reason_code)

    # Messages -------------------------------------------------------------------
    def _on_message(self, client, userdata, message) -> None:
        mid, qos, generation = message.mid, message.qos, self._generation

        def acknowledge(_stored: bool = True) -> None:
            if qos > 0 and generation == self._generation:
                client.ack(mid, qos)

        try:
            deferred = self.handle(message.topic, message.payload, acknowledge)
        except Exception:  # a bad message must never stop the ingest
            self.counters["errors"] += 1
            log.exception("MQTT message on %s could not be handled", message.topic)
            deferred = False
        if not deferred:
            acknowledge()

    def _invalid(self, cp_id: str | None, reason: str, detail: str) -> str:
        """Count and log an invalid message; returns "<reason>: <detail>" (shortened)."""
        self.counters["invalid"] += 1
        self.counters[f"invalid.{reason}"] += 1
        if cp_id is not None:
            stats = self.stations.setdefault(cp_id, StationTelemetryStats(cp_id))
            stats.invalid += 1
            self._save_stats(stats)
        log.warning("invalid telemetry message from %s (%s): %s", cp_id, reason, detail)
        return f"{reason}: {detail}"[:200]

    def handle(self, topic: str, payload: bytes, acknowledge=None) -> bool:
        """Process one message; True if `acknowledge` will be called once it is stored."""
        self.counters["received"] += 1
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != self.prefix or not parts[1]:
            self._invalid(None, "topic", topic)
            return
        cp_id, kind = parts[1], parts[2]
        if kind == "state":
            self._handle_state(cp_id, payload)
        elif kind == "telemetry":
            return self.telemetry(cp_id, payload, acknowledge) is None and acknowledge is not None
        else:
            self._invalid(cp_id, "topic", topic)
        return False

    def _handle_state(self, cp_id: str, payload: bytes) -> None:
        state = payload.decode("utf-8", "replace").strip()
        if state not in ("online", "offline"):
            self._invalid(cp_id, "state", repr(state[:40]))
            return
        self.counters[f"state.{state}"] += 1
        self.fleet.set_telemetry_online(
            cp_id, state == "online", "MQTT last will" if state == "offline" else "MQTT online")

    def handle_ocpp(self, cp_id: str, data: str, acknowledge) -> str | None:
        """A telemetry report that came inside the station's OCPP session (a DataTransfer,
        server/ocpp/handlers.py; `cp_id` is the authenticated connection's): the same
        pipeline as the MQTT topic's. None when taken (`acknowledge(stored)` follows once
        it, or the first copy of a duplicate, is committed), else why it is invalid."""
        self.counters["received"] += 1
        self.counters["received.ocpp"] += 1
        self.via_ocpp.add(cp_id)
        # a lone surrogate (a JSON escape) cannot be UTF-8: it fails as invalid JSON below
        return self.telemetry(cp_id, data.encode("utf-8", "surrogatepass"), acknowledge)

    def telemetry(self, cp_id: str, payload: bytes, acknowledge=None) -> str | None:
        """One telemetry report of station `cp_id`, whatever carried it: size bound, JSON
        (NaN and Infinity refused), schema, seq accounting, the row to the store, the
        ThingSpeak bridge. None when it was taken: a new row, or a duplicate of one, and
        `acknowledge` (if given) is called once that row is committed; otherwise the
        reason it is invalid ("size: ...", "json: ...", "schema: ..."; counted, nothing
        stored)."""
        with self._lock:
            return self._handle_telemetry(cp_id, payload, acknowledge)

    def _handle_telemetry(self, cp_id: str, payload: bytes, acknowledge=None) -> str | None:
        if len(payload) > self.max_payload:
            return self._invalid(cp_id, "size", f"{len(payload)} bytes > {self.max_payload}")
        try:
            data = json.loads(payload, parse_constant=_refuse_constant)
        except ValueError as exc:
            return self._invalid(cp_id, "json", str(exc))
        errors = TELEMETRY_VALIDATOR.errors(data)
        if errors:
            error = best_match(errors)
            where = "/".join(str(p) for p in error.absolute_path) or "payload"
            return self._invalid(cp_id, "schema", f"{where}: {error.message}")
        now = time.time()
        stats = self.stations.setdefault(cp_id, StationTelemetryStats(cp_id))
        if not stats.observe(data["seq"], data.get("up"), now, data["ts"]):
            self.counters["duplicates"] += 1
            self._save_stats(stats)
            if acknowledge is not None:
                # the first copy may still be waiting for its commit: acknowledge after it
                self.store.when_committed(acknowledge)
            return None
        row = {"cp_id": cp_id, "ts": float(data["ts"]), "received_at": now, "seq": data["seq"]}
        for column in TELEMETRY_COLUMNS:
            row[column] = data.get(column)
        position = (data["seq"], data.get("up"))
        # a message that arrived late fills a gap behind the newest: it must not move the
        # committed position back (after a crash, newer rows would be stored twice)
        newest = stats.last_seq == data["seq"]

        def settled(stored: bool = True) -> None:
            # the saved counters never run ahead of the committed rows
            if stored:
                with self._lock:
                    if newest:
                        self._committed[cp_id] = position
                    self._save_stats(stats)
            if acknowledge is not None:
                acknowledge()

        self.store.add_telemetry(row, on_settled=settled)
        self.counters["telemetry_accepted"] += 1
        self.fleet.set_telemetry_online(cp_id, True, "telemetry received", now)
        if self.on_telemetry is not None:
            self.on_telemetry(cp_id, row)
        return None

    def _save_stats(self, stats: StationTelemetryStats) -> None:
        row = stats.as_row()
        row["last_seq"], row["last_up"] = self._committed.get(stats.cp_id, (None, None))
        self.store.save_telemetry_stats(row)

    def stats(self) -> dict:
        return {
            "connected": self.ready.is_set(),
            "broker": {k: v for k, v in (self.broker or {}).items() if k != "password"},
            "counters": dict(self.counters),
            "stations": {cp: s.as_row() for cp, s in sorted(self.stations.items())},
        }
