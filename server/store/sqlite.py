"""SQLite (WAL) implementation of :class:`Store`.

All writes go through one writer thread that drains a queue and commits many writes
per transaction, so no caller ever waits for a commit on its hot path. Reads use one
connection per reading thread (WAL lets them run alongside the writer).
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from server.store.base import Row, Store
from server.store.migrations import MIGRATIONS

log = logging.getLogger(__name__)

TELEMETRY_COLUMNS = ("t", "rh", "tmcu", "v", "a", "w", "wh", "cp", "st", "lim", "rssi", "heap", "up")
FEED_FIELDS = tuple(f"field{n}" for n in range(1, 9))
_STOP = object()
_LATEST = object()  # wakes the writer: snapshots are waiting in _latest


class _Barrier:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def apply_migrations(conn: sqlite3.Connection) -> int:
    """Bring the schema to the newest version; returns that version."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
        "description TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
    for version, description, sql in MIGRATIONS:
        if version <= current:
            continue
        log.info("applying schema migration %d: %s", version, description)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, sql.split(";")):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (version, description, time.time()),
            )
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        current = version
    return current


class SQLiteStore(Store):
    def __init__(self, path: str | Path, batch_max: int = 2000,
                 retention_days: dict[str, float] | None = None,
                 retention_check_seconds: float = 3600) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.batch_max = batch_max
        self.retention_days = retention_days or {}
        self.retention_check_seconds = retention_check_seconds
        self._write_conn = _connect(self.path)
        self.schema_version = apply_migrations(self._write_conn)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # snapshot rows (one per key, only the newest matters): written with the next
        # batch instead of one queued write per update
        self._latest: dict = {}
        self._latest_lock = threading.Lock()
        self._accepted: Counter = Counter()
        self._committed: Counter = Counter()
        self._batches = 0
        self._failed = 0
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()

    # Writer ------------------------------------------------------------------
    def _submit(self, kind: str, sql: str, params: Any = (), many: bool = False,
                on_committed=None) -> None:
        if self._closed:
            raise RuntimeError("store is closed")
        self._accepted[kind] += len(params) if many else 1
        self._queue.put((kind, sql, params, many, on_committed))

    def _submit_latest(self, kind: str, key: Any, sql: str, params: Any) -> None:
        if self._closed:
            raise RuntimeError("store is closed")
        self._accepted[kind] += 1
        with self._latest_lock:
            wake = not self._latest
            replaced = (kind, key) in self._latest
            self._latest[(kind, key)] = (sql, params)
        if replaced:
            self._committed[kind] += 1  # superseded by a newer snapshot of the same key
        if wake:
            self._queue.put(_LATEST)

    def _take_latest(self) -> list:
        with self._latest_lock:
            items, self._latest = self._latest, {}
        return [(kind, sql, params, False, None) for (kind, _key), (sql, params) in items.items()]

    def _write_loop(self) -> None:
        next_retention = time.monotonic() + self.retention_check_seconds
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                item = None
            batch, barriers, stop = [], [], False
            while item is not None:
                if item is _STOP:
                    stop = True
                elif item is _LATEST:
                    pass  # taken below, with the batch
                elif isinstance(item, _Barrier):
                    barriers.append(item)
                else:
                    batch.append(item)
                if len(batch) >= self.batch_max:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            batch.extend(self._take_latest())
            if batch:
                self._commit_batch(batch)
            for barrier in barriers:
                barrier.event.set()
            if time.monotonic() >= next_retention:
                next_retention = time.monotonic() + self.retention_check_seconds
                try:
                    self.purge_expired(time.time())
                except sqlite3.Error:
                    log.exception("retention purge failed")
            if stop and self._queue.empty():
                return

    def _commit_batch(self, batch: list) -> None:
        conn = self._write_conn
        try:
            conn.execute("BEGIN")
            for _kind, sql, params, many, _done in batch:
                if many:
                    conn.executemany(sql, params)
                else:
                    conn.execute(sql, params)
            conn.execute("COMMIT")
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            log.exception("batch of %d writes failed; retrying one by one", len(batch))
            for item in batch:
                self._commit_one(item)
            return
        self._batches += 1
        for kind, _sql, params, many, done in batch:
            self._committed[kind] += len(params) if many else 1
            self._notify(done)

    @staticmethod
    def _notify(done) -> None:
        if done is None:
            return
        try:
            done()
        except Exception:  # a failing acknowledgement must not stop the writer
            log.exception("commit callback failed")

    def _commit_one(self, item) -> None:
        kind, sql, params, many, done = item
        try:
            with self._write_conn:
                if many:
                    self._write_conn.executemany(sql, params)
                else:
                    self._write_conn.execute(sql, params)
            self._committed[kind] += len(params) if many else 1
        except sqlite3.Error:
            self._failed += 1
            log.exception("write %s failed: %s %r", kind, sql, params)
            return  # not acknowledged: an MQTT sender's broker will deliver it again
        self._notify(done)

    def sync(self, timeout: float = 10.0) -> None:
        if self._closed:
            return
        barrier = _Barrier()
        self._queue.put(barrier)
        if not barrier.event.wait(timeout):
            raise TimeoutError("store writer did not catch up")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        self._write_conn.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def stats(self) -> Row:
        return {
            "accepted": dict(self._accepted),
            "committed": dict(self._committed),
            "batches": self._batches,
            "failed_writes": self._failed,
            "queue_depth": self._queue.qsize(),
            "schema_version": self.schema_version,
            "path": str(self.path),
        }

    def purge_expired(self, now: float) -> Row:
        deleted = {}
        for table, column in (("telemetry", "ts"), ("meter_values", "ts"),
                              ("status_history", "received_at"), ("events", "ts")):
            days = self.retention_days.get(table)
            if not days or days <= 0:
                continue
            with self._write_conn:
                cur = self._write_conn.execute(
                    f"DELETE FROM {table} WHERE {column} < ?", (now - days * 86400,))
            deleted[table] = cur.rowcount
        return deleted

    # Reads -------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _all(self, sql: str, params: Any = ()) -> list[Row]:
        return [dict(r) for r in self._reader().execute(sql, params).fetchall()]

    def _one(self, sql: str, params: Any = ()) -> Row | None:
        row = self._reader().execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    # Charge points -------------------------------------------------------------
    _CP_COLUMNS = ("id", "registration", "auth_key_hash", "description", "vendor", "model",
                   "serial_number", "box_serial_number", "firmware_version", "iccid", "imsi",
                   "meter_type", "meter_serial_number", "heartbeat_interval", "boot_at",
                   "last_seen", "ocpp_online", "telemetry_online", "telemetry_last_seen",
                   "firmware_status", "diagnostics_status", "created_at")

    def save_chargepoint(self, record: Row) -> None:
        cols = self._CP_COLUMNS
        sql = (f"INSERT INTO chargepoints ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
               f"ON CONFLICT(id) DO UPDATE SET "
               + ", ".join(f"{c}=excluded.{c}" for c in cols if c != "id"))
        self._submit("chargepoint", sql, tuple(record.get(c) for c in cols))

    def delete_chargepoint(self, cp_id: str) -> None:
        self._submit("chargepoint", "DELETE FROM chargepoints WHERE id = ?", (cp_id,))

    def load_chargepoints(self) -> list[Row]:
        return self._all("SELECT * FROM chargepoints ORDER BY id")

    def save_connector_status(self, status: Row) -> None:
        params = (status["cp_id"], status["connector_id"], status["status"], status.get("error_code"),
                  status.get("info"), status.get("vendor_id"), status.get("vendor_error_code"),
                  status.get("ts"), status["received_at"])
        self._submit(
            "connector_status",
            "INSERT INTO connectors (cp_id, connector_id, status, error_code, info, vendor_id, "
            "vendor_error_code, status_ts, updated_at) VALUES (?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(cp_id, connector_id) DO UPDATE SET status=excluded.status, "
            "error_code=excluded.error_code, info=excluded.info, vendor_id=excluded.vendor_id, "
            "vendor_error_code=excluded.vendor_error_code, status_ts=excluded.status_ts, "
            "updated_at=excluded.updated_at", params)
        self._submit(
            "status_history",
            "INSERT INTO status_history (cp_id, connector_id, status, error_code, info, vendor_id, "
            "vendor_error_code, ts, received_at) VALUES (?,?,?,?,?,?,?,?,?)", params)

    def load_connectors(self, cp_id: str | None = None) -> list[Row]:
        if cp_id is None:
            return self._all("SELECT * FROM connectors ORDER BY cp_id, connector_id")
        return self._all("SELECT * FROM connectors WHERE cp_id = ? ORDER BY connector_id", (cp_id,))

    def status_history(self, cp_id: str, limit: int = 100, since: float | None = None) -> list[Row]:
        return self._all(
            "SELECT * FROM status_history WHERE cp_id = ? AND received_at >= ? "
            "ORDER BY received_at DESC, id DESC LIMIT ?", (cp_id, since or 0, limit))

    def add_event(self, ts: float, cp_id: str | None, kind: str, detail: Row | None) -> None:
        self._submit("event", "INSERT INTO events (ts, cp_id, kind, detail) VALUES (?,?,?,?)",
                     (ts, cp_id, kind, json.dumps(detail) if detail else None))

    def list_events(self, cp_id=None, kind=None, since=None, limit=100) -> list[Row]:
        where, params = ["ts >= ?"], [since or 0]
        if cp_id is not None:
            where.append("cp_id = ?")
            params.append(cp_id)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        rows = self._all(f"SELECT * FROM events WHERE {' AND '.join(where)} "
                         f"ORDER BY ts DESC, id DESC LIMIT ?", (*params, limit))
        for row in rows:
            row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
        return rows

    def add_data_transfer(self, row: Row) -> None:
        self._submit("data_transfer",
                     "INSERT INTO data_transfers (ts, cp_id, direction, vendor_id, message_id, data) "
                     "VALUES (?,?,?,?,?,?)",
                     (row["ts"], row["cp_id"], row["direction"], row["vendor_id"],
                      row.get("message_id"), row.get("data")))

    # Authorization ---------------------------------------------------------
    def save_id_tag(self, tag: Row) -> None:
        self._submit(
            "id_tag",
            "INSERT INTO id_tags (id_tag, status, expiry, parent_id_tag, note, created_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(id_tag) DO UPDATE SET status=excluded.status, "
            "expiry=excluded.expiry, parent_id_tag=excluded.parent_id_tag, note=excluded.note",
            (tag["id_tag"], tag.get("status", "Accepted"), tag.get("expiry"),
             tag.get("parent_id_tag"), tag.get("note"), tag.get("created_at") or time.time()))

    def delete_id_tag(self, id_tag: str) -> None:
        self._submit("id_tag", "DELETE FROM id_tags WHERE id_tag = ?", (id_tag,))

    def get_id_tag(self, id_tag: str) -> Row | None:
        return self._one("SELECT * FROM id_tags WHERE id_tag = ?", (id_tag,))

    def list_id_tags(self) -> list[Row]:
        return self._all("SELECT * FROM id_tags ORDER BY id_tag")

    # Transactions ------------------------------------------------------------
    def max_transaction_id(self) -> int:
        return self._reader().execute("SELECT COALESCE(MAX(id), 0) FROM transactions").fetchone()[0]

    def transaction_start_keys(self, since: float) -> list[Row]:
        return self._all(
            "SELECT id, cp_id, connector_id, id_tag, meter_start, start_timestamp, stop_ts "
            "FROM transactions WHERE start_ts >= ? OR stop_ts IS NULL", (since,))

    def start_transaction(self, tx: Row) -> None:
        self._submit(
            "transaction",
            "INSERT OR IGNORE INTO transactions (id, cp_id, connector_id, id_tag, id_tag_status, "
            "meter_start, start_ts, start_timestamp, reservation_id) VALUES (?,?,?,?,?,?,?,?,?)",
            (tx["id"], tx["cp_id"], tx["connector_id"], tx["id_tag"], tx.get("id_tag_status"),
             tx["meter_start"], tx["start_ts"], tx["start_timestamp"], tx.get("reservation_id")))

    def stop_transaction(self, tx_id: int, stop: Row) -> None:
        self._submit(
            "transaction",
            "UPDATE transactions SET meter_stop = ?, stop_ts = ?, stop_reason = ?, stop_id_tag = ? "
            "WHERE id = ?",
            (stop["meter_stop"], stop["stop_ts"], stop.get("reason"), stop.get("id_tag"), tx_id))

    @staticmethod
    def _with_energy(row: Row) -> Row:
        row["energy_wh"] = (row["meter_stop"] - row["meter_start"]
                            if row.get("meter_stop") is not None else None)
        return row

    def get_transaction(self, tx_id: int) -> Row | None:
        row = self._one("SELECT * FROM transactions WHERE id = ?", (tx_id,))
        return self._with_energy(row) if row else None

    def list_transactions(self, cp_id=None, id_tag=None, state=None, since=None, until=None,
                          limit=500) -> list[Row]:
        where, params = ["start_ts >= ?"], [since or 0]
        if until is not None:
            where.append("start_ts <= ?")
            params.append(until)
        if cp_id is not None:
            where.append("cp_id = ?")
            params.append(cp_id)
        if id_tag is not None:
            where.append("id_tag = ?")
            params.append(id_tag)
        if state == "active":
            where.append("stop_ts IS NULL")
        elif state == "completed":
            where.append("stop_ts IS NOT NULL")
        rows = self._all(f"SELECT * FROM transactions WHERE {' AND '.join(where)} "
                         f"ORDER BY start_ts DESC, id DESC LIMIT ?", (*params, limit))
        return [self._with_energy(r) for r in rows]

    def add_meter_values(self, rows: list[Row]) -> None:
        if not rows:
            return
        self._submit(
            "meter_value",
            "INSERT INTO meter_values (cp_id, connector_id, transaction_id, ts, value, measurand, "
            "unit, phase, context, location, format, source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(r["cp_id"], r["connector_id"], r.get("transaction_id"), r["ts"], r["value"],
              r.get("measurand"), r.get("unit"), r.get("phase"), r.get("context"),
              r.get("location"), r.get("format"), r["source"]) for r in rows],
            many=True)

    def list_meter_values(self, cp_id=None, transaction_id=None, measurand=None, since=None,
                          until=None, limit=1000) -> list[Row]:
        where, params = ["ts >= ?"], [since or 0]
        if until is not None:
            where.append("ts <= ?")
            params.append(until)
        if cp_id is not None:
            where.append("cp_id = ?")
            params.append(cp_id)
        if transaction_id is not None:
            where.append("transaction_id = ?")
            params.append(transaction_id)
        if measurand is not None:
            where.append("COALESCE(measurand, 'Energy.Active.Import.Register') = ?")
            params.append(measurand)
        return self._all(f"SELECT * FROM meter_values WHERE {' AND '.join(where)} "
                         f"ORDER BY ts, id LIMIT ?", (*params, limit))

    # Telemetry ------------------------------------------------------------------
    def add_telemetry(self, row: Row, on_committed=None) -> None:
        cols = ("cp_id", "ts", "received_at", "seq", *TELEMETRY_COLUMNS)
        self._submit("telemetry",
                     f"INSERT INTO telemetry ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     tuple(row.get(c) for c in cols), on_committed=on_committed)

    def list_telemetry(self, cp_id, since=None, until=None, limit=1000) -> list[Row]:
        # The newest `limit` rows, returned oldest first for charting.
        rows = self._all(
            "SELECT * FROM telemetry WHERE cp_id = ? AND ts >= ? AND ts <= ? "
            "ORDER BY ts DESC, id DESC LIMIT ?",
            (cp_id, since or 0, until if until is not None else 1e12, limit))
        rows.reverse()
        return rows

    def save_telemetry_stats(self, row: Row) -> None:
        cols = ("cp_id", "received", "lost", "duplicates", "reboots", "invalid", "last_seq",
                "last_up", "updated_at")
        self._submit_latest(
            "telemetry_stats", row.get("cp_id"),
            f"INSERT INTO telemetry_stats ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            "ON CONFLICT(cp_id) DO UPDATE SET "
            + ", ".join(f"{c}=excluded.{c}" for c in cols if c != "cp_id"),
            tuple(row.get(c) for c in cols))

    def load_telemetry_stats(self) -> list[Row]:
        return self._all("SELECT * FROM telemetry_stats ORDER BY cp_id")

    # ThingSpeak ---------------------------------------------------------------
    def save_ts_channel(self, channel: Row) -> None:
        cols = ("id", "name", "description", "write_key", "read_key", "public", "field_names",
                "latitude", "longitude", "elevation", "created_at", "updated_at", "last_entry_id")
        values = dict(channel, field_names=json.dumps(channel["field_names"]),
                      public=int(bool(channel.get("public"))))
        self._submit(
            "ts_channel",
            f"INSERT INTO ts_channels ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            "ON CONFLICT(id) DO UPDATE SET "
            + ", ".join(f"{c}=excluded.{c}" for c in cols if c != "id"),
            tuple(values.get(c) for c in cols))

    def delete_ts_channel(self, channel_id: int) -> None:
        self._submit("ts_channel", "DELETE FROM ts_feeds WHERE channel_id = ?", (channel_id,))
        self._submit("ts_channel", "DELETE FROM ts_channels WHERE id = ?", (channel_id,))

    def load_ts_channels(self) -> list[Row]:
        rows = self._all("SELECT * FROM ts_channels ORDER BY id")
        for row in rows:
            row["field_names"] = json.loads(row["field_names"])
            row["public"] = bool(row["public"])
        return rows

    def add_ts_feeds(self, channel_id: int, entries: list[Row]) -> None:
        cols = ("channel_id", "entry_id", "created_at", *FEED_FIELDS, "status", "latitude",
                "longitude", "elevation")
        self._submit(
            "ts_feed",
            f"INSERT INTO ts_feeds ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [tuple(channel_id if c == "channel_id" else e.get(c) for c in cols) for e in entries],
            many=True)

    def list_ts_feeds(self, channel_id, results=None, start=None, end=None) -> list[Row]:
        rows = self._all(
            "SELECT * FROM ts_feeds WHERE channel_id = ? AND created_at >= ? AND created_at <= ? "
            "ORDER BY entry_id DESC LIMIT ?",
            (channel_id, start or 0, end if end is not None else 1e12,
             results if results is not None else 8000))
        rows.reverse()
        return rows

    def save_bridge(self, bridge: Row) -> None:
        self._submit(
            "ts_bridge",
            "INSERT INTO ts_bridges (cp_id, url, channel, write_key, enabled) VALUES (?,?,?,?,?) "
            "ON CONFLICT(cp_id) DO UPDATE SET url=excluded.url, channel=excluded.channel, "
            "write_key=excluded.write_key, enabled=excluded.enabled",
            (bridge["cp_id"], bridge["url"], bridge["channel"], bridge["write_key"],
             int(bool(bridge.get("enabled", True)))))

    def delete_bridge(self, cp_id: str) -> None:
        self._submit("ts_bridge", "DELETE FROM ts_bridges WHERE cp_id = ?", (cp_id,))

    def load_bridges(self) -> list[Row]:
        rows = self._all("SELECT * FROM ts_bridges ORDER BY cp_id")
        for row in rows:
            row["enabled"] = bool(row["enabled"])
        return rows

    # Files ----------------------------------------------------------------------
    def add_diagnostics_file(self, row: Row) -> None:
        self._submit(
            "diagnostics_file",
            "INSERT INTO diagnostics_files (cp_id, filename, path, size, sha256, received_at) "
            "VALUES (?,?,?,?,?,?)",
            (row.get("cp_id"), row["filename"], row["path"], row["size"], row["sha256"],
             row["received_at"]))

    def list_diagnostics_files(self, cp_id: str | None = None) -> list[Row]:
        if cp_id is None:
            return self._all("SELECT * FROM diagnostics_files ORDER BY received_at DESC")
        return self._all("SELECT * FROM diagnostics_files WHERE cp_id = ? "
                         "ORDER BY received_at DESC", (cp_id,))

    # Operator accounts, API tokens, dashboard sessions (schema version 3) -------
    def save_operator_user(self, user: Row) -> None:
        self._submit(
            "operator_user",
            "INSERT INTO operator_users (username, role, password_hash, created_at, updated_at) "
            "VALUES (?,?,?,?,?) ON CONFLICT(username) DO UPDATE SET role=excluded.role, "
            "password_hash=excluded.password_hash, updated_at=excluded.updated_at",
            (user["username"], user["role"], user["password_hash"], user["created_at"],
             user["updated_at"]))

    def delete_operator_user(self, username: str) -> None:
        self._submit("operator_session", "DELETE FROM operator_sessions WHERE username = ?",
                     (username,))
        self._submit("operator_user", "DELETE FROM operator_users WHERE username = ?", (username,))

    def get_operator_user(self, username: str) -> Row | None:
        return self._one("SELECT * FROM operator_users WHERE username = ?", (username,))

    def list_operator_users(self) -> list[Row]:
        return self._all("SELECT * FROM operator_users ORDER BY username")

    def save_api_token(self, token: Row) -> None:
        self._submit(
            "api_token",
            "INSERT INTO api_tokens (id, name, role, token_hash, created_by, created_at, revoked_at) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET name=excluded.name, "
            "role=excluded.role, token_hash=excluded.token_hash, revoked_at=excluded.revoked_at",
            (token["id"], token["name"], token["role"], token["token_hash"],
             token.get("created_by"), token["created_at"], token.get("revoked_at")))

    def revoke_api_token(self, token_id: str, revoked_at: float) -> None:
        self._submit("api_token", "UPDATE api_tokens SET revoked_at = ? "
                     "WHERE id = ? AND revoked_at IS NULL", (revoked_at, token_id))

    def find_api_token(self, token_hash: str) -> Row | None:
        return self._one("SELECT * FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL",
                         (token_hash,))

    def list_api_tokens(self) -> list[Row]:
        return self._all("SELECT * FROM api_tokens ORDER BY created_at, id")

    def save_operator_session(self, session: Row) -> None:
        self._submit(
            "operator_session",
            "INSERT INTO operator_sessions (id_hash, username, csrf_token, created_at, expires_at) "
            "VALUES (?,?,?,?,?)",
            (session["id_hash"], session["username"], session["csrf_token"],
             session["created_at"], session["expires_at"]))

    def delete_operator_sessions(self, id_hash=None, username=None, expired_before=None) -> None:
        if id_hash is not None:
            self._submit("operator_session", "DELETE FROM operator_sessions WHERE id_hash = ?",
                         (id_hash,))
        if username is not None:
            self._submit("operator_session", "DELETE FROM operator_sessions WHERE username = ?",
                         (username,))
        if expired_before is not None:
            self._submit("operator_session", "DELETE FROM operator_sessions WHERE expires_at < ?",
                         (expired_before,))

    def find_operator_session(self, id_hash: str, now: float) -> Row | None:
        return self._one(
            "SELECT s.id_hash, s.username, s.csrf_token, s.created_at, s.expires_at, u.role "
            "FROM operator_sessions s JOIN operator_users u ON u.username = s.username "
            "WHERE s.id_hash = ? AND s.expires_at > ?", (id_hash, now))
