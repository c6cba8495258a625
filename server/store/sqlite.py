"""SQLite (WAL) implementation of :class:`Store`.

All writes go through one writer thread (:mod:`server.store.writer`) that commits
everything queued since its last commit in one transaction (group commit) and settles
each write afterwards, so a caller that must answer "recorded" waits a few milliseconds
and never answers before the commit. Reads use one connection per reading thread (WAL
lets them run alongside the writer). Commits are fsynced (``synchronous=FULL``) unless
the configuration trades that for speed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from server.store.base import Row, Store
from server.store.migrations import MIGRATIONS
from server.store.writer import Write, Writer

log = logging.getLogger(__name__)

TELEMETRY_COLUMNS = ("t", "rh", "tmcu", "v", "a", "w", "wh", "cp", "st", "lim", "rssi", "heap", "up")
FEED_FIELDS = tuple(f"field{n}" for n in range(1, 9))
SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")


class StoreCorrupt(Exception):
    """The database file is damaged or not a PicoCharge database."""


def _connect(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
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


def _open_checked(path: Path, synchronous: str) -> tuple[sqlite3.Connection, int]:
    """Open the database, check it is intact, migrate it; a damaged file is reported with
    what to do instead of failing somewhere later."""
    try:
        conn = _connect(path, synchronous)
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            conn.close()
            raise StoreCorrupt(verdict)
        return conn, apply_migrations(conn)
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and "corrupt" not in str(exc).lower():
            raise
        raise StoreCorrupt(str(exc)) from exc


def backup_database(source_path: str | Path, target: str | Path) -> Row:
    """A consistent online copy (SQLite's backup API), safe while a server keeps writing
    to the database; written beside the target and renamed into place once checked."""
    source_path, target = Path(source_path), Path(target)
    if not source_path.exists():
        raise FileNotFoundError(f"no database at {source_path}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    source = sqlite3.connect(source_path, timeout=30)
    try:
        dest = sqlite3.connect(partial)
        try:
            source.backup(dest, pages=1024)
            verdict = dest.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise StoreCorrupt(f"the copy does not check out: {verdict}")
            version = dest.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        finally:
            dest.close()
    finally:
        source.close()
    partial.replace(target)
    return {"path": str(target), "bytes": target.stat().st_size, "schema_version": version}


def _run_sql(sql: str, params: Any, many: bool):
    if many:
        return lambda conn: conn.executemany(sql, params).rowcount
    return lambda conn: conn.execute(sql, params).rowcount


class SQLiteStore(Store):
    def __init__(self, path: str | Path, batch_max: int = 2000,
                 retention_days: dict[str, float] | None = None,
                 retention_check_seconds: float = 3600, synchronous: str = "FULL",
                 close_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"store.synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        self.synchronous = synchronous
        self.batch_max = batch_max
        self.retention_days = retention_days or {}
        self.retention_check_seconds = retention_check_seconds
        self.close_timeout = close_timeout
        try:
            self._write_conn, self.schema_version = _open_checked(self.path, synchronous)
        except StoreCorrupt as exc:
            raise StoreCorrupt(
                f"the database {self.path} is damaged ({exc}). Stop the server, keep a copy "
                f"of the file, then either restore your latest backup (python -m server "
                f"backup makes one) to that path, or try `sqlite3 {self.path} .recover | "
                f"sqlite3 recovered.db` and point store.path at the result") from exc
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._writer = Writer(self._write_conn, batch_max,
                              idle_work=lambda: self._purge_in_writer(time.time()),
                              idle_every=retention_check_seconds)

    # Writer ------------------------------------------------------------------
    def _submit(self, kind: str, sql: str, params: Any = (), many: bool = False,
                on_settled=None, fail_fast: bool = False) -> Future:
        return self._writer.submit(Write(kind, _run_sql(sql, params, many),
                                         len(params) if many else 1, on_settled, fail_fast))

    def _submit_op(self, kind: str, run, count: int = 1) -> Future:
        """A write whose caller waits for its result before answering."""
        return self._writer.submit(Write(kind, run, count, fail_fast=True))

    def _submit_latest(self, kind: str, key: Any, sql: str, params: Any) -> None:
        self._writer.submit_latest((kind, key), Write(kind, _run_sql(sql, params, False)))

    def when_committed(self, callback) -> None:
        """Run `callback(True)` once every write accepted before this call is committed."""
        self._writer.submit(Write("barrier", lambda conn: None, 0, on_settled=callback))

    @property
    def failure(self) -> str | None:
        return self._writer.failure

    def observe_commits(self, callback) -> None:
        """Call ``callback(seconds)`` after each committed batch with how long it took,
        BEGIN to COMMIT (on the writer thread; server/metrics.py)."""
        self._writer.on_commit = callback

    def health(self) -> Row:
        writer = self._writer
        if writer.failure is None:
            return {"ok": True}
        return {"ok": False, "reason": f"store cannot commit: {writer.failure}",
                "failing_for_s": round(time.monotonic() - writer.failing_since, 1),
                "held_writes": writer.queue_depth}

    def sync(self, timeout: float = 10.0) -> None:
        if self._closed:
            return
        self._writer.barrier(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        unwritten = self._writer.close(self.close_timeout)
        self.unwritten = dict(unwritten)
        if unwritten:
            log.error("store closed with %d accepted writes NOT committed (%s): %s",
                      sum(unwritten.values()), self._writer.failure,
                      ", ".join(f"{k} {n}" for k, n in sorted(unwritten.items())))
        self._write_conn.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def stats(self) -> Row:
        writer = self._writer
        return {
            "accepted": dict(writer.accepted),
            "committed": dict(writer.committed),
            "rejected_writes": dict(writer.rejected),
            "batches": writer.batches,
            "queue_depth": writer.queue_depth,
            "failure": writer.failure,
            "synchronous": self.synchronous,
            "schema_version": self.schema_version,
            "path": str(self.path),
        }

    # Retention, by the server's own receive time (never a time a station claims).
    RETENTION = (("telemetry", "received_at"), ("meter_values", "received_at"),
                 ("status_history", "received_at"), ("events", "ts"),
                 ("data_transfers", "ts"), ("ts_feeds", "received_at"),
                 ("diagnostics_files", "received_at"))

    def _purge(self, conn: sqlite3.Connection, now: float) -> tuple[Row, list[str]]:
        deleted: Row = {}
        files: list[str] = []
        for table, column in self.RETENTION:
            days = self.retention_days.get(table)
            if not days or days <= 0:
                continue
            cutoff = now - days * 86400
            if table == "diagnostics_files":
                files += [r[0] for r in conn.execute(
                    "SELECT path FROM diagnostics_files WHERE received_at < ?", (cutoff,))]
            deleted[table] = conn.execute(
                f"DELETE FROM {table} WHERE {column} < ?", (cutoff,)).rowcount
        return deleted, files

    @staticmethod
    def _remove_files(paths: list[str]) -> None:
        for path in paths:
            try:
                Path(path).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("retention: could not remove %s: %s", path, exc)

    def _purge_in_writer(self, now: float) -> None:
        conn = self._write_conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted, files = self._purge(conn, now)
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        self._remove_files(files)
        if any(deleted.values()):
            log.info("retention removed %s", deleted)

    def purge_expired(self, now: float) -> Row:
        deleted, files = self._submit_op("retention", lambda conn: self._purge(conn, now)).result(60)
        self._remove_files(files)
        return deleted

    def backup(self, target: str | Path) -> Row:
        return backup_database(self.path, target)

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

    def save_chargepoint(self, record: Row) -> Future:
        cols = self._CP_COLUMNS
        sql = (f"INSERT INTO chargepoints ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
               f"ON CONFLICT(id) DO UPDATE SET "
               + ", ".join(f"{c}=excluded.{c}" for c in cols if c != "id"))
        return self._submit("chargepoint", sql, tuple(record.get(c) for c in cols))

    def delete_chargepoint(self, cp_id: str) -> Future:
        return self._submit("chargepoint", "DELETE FROM chargepoints WHERE id = ?", (cp_id,))

    def load_chargepoints(self) -> list[Row]:
        return self._all("SELECT * FROM chargepoints ORDER BY id")

    def save_connector_status(self, status: Row) -> Future:
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
        return self._submit(
            "status_history",
            "INSERT INTO status_history (cp_id, connector_id, status, error_code, info, vendor_id, "
            "vendor_error_code, ts, received_at) VALUES (?,?,?,?,?,?,?,?,?)", params,
            fail_fast=True)

    def load_connectors(self, cp_id: str | None = None) -> list[Row]:
        if cp_id is None:
            return self._all("SELECT * FROM connectors ORDER BY cp_id, connector_id")
        return self._all("SELECT * FROM connectors WHERE cp_id = ? ORDER BY connector_id", (cp_id,))

    def status_history(self, cp_id: str, limit: int = 100, since: float | None = None) -> list[Row]:
        return self._all(
            "SELECT * FROM status_history WHERE cp_id = ? AND received_at >= ? "
            "ORDER BY received_at DESC, id DESC LIMIT ?", (cp_id, since or 0, limit))

    def add_event(self, ts: float, cp_id: str | None, kind: str, detail: Row | None) -> Future:
        return self._submit("event", "INSERT INTO events (ts, cp_id, kind, detail) VALUES (?,?,?,?)",
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

    def add_data_transfer(self, row: Row) -> Future:
        return self._submit("data_transfer",
                            "INSERT INTO data_transfers (ts, cp_id, direction, vendor_id, "
                            "message_id, data) VALUES (?,?,?,?,?,?)",
                            (row["ts"], row["cp_id"], row["direction"], row["vendor_id"],
                             row.get("message_id"), row.get("data")), fail_fast=True)

    # Authorization ---------------------------------------------------------
    def save_id_tag(self, tag: Row) -> Future:
        return self._submit(
            "id_tag",
            "INSERT INTO id_tags (id_tag, status, expiry, parent_id_tag, note, created_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(id_tag) DO UPDATE SET status=excluded.status, "
            "expiry=excluded.expiry, parent_id_tag=excluded.parent_id_tag, note=excluded.note",
            (tag["id_tag"], tag.get("status", "Accepted"), tag.get("expiry"),
             tag.get("parent_id_tag"), tag.get("note"), tag.get("created_at") or time.time()))

    def delete_id_tag(self, id_tag: str) -> Future:
        return self._submit("id_tag", "DELETE FROM id_tags WHERE id_tag = ?", (id_tag,))

    def get_id_tag(self, id_tag: str) -> Row | None:
        return self._one("SELECT * FROM id_tags WHERE id_tag = ?", (id_tag,))

    def list_id_tags(self) -> list[Row]:
        return self._all("SELECT * FROM id_tags ORDER BY id_tag")

    # Transactions ------------------------------------------------------------
    # A transaction is written and read back inside the writer's transaction, so its id
    # (from a durable sequence, never reused) and the ownership checks see committed state
    # and the caller answers only after the commit.
    _START_KEY = ("cp_id", "connector_id", "id_tag", "meter_start", "start_timestamp")

    def start_transaction(self, tx: Row) -> Future:
        """Future of (transactionId, created); a retransmitted start maps to the same id."""
        key = tuple(tx[k] for k in self._START_KEY)

        def run(conn: sqlite3.Connection):
            row = conn.execute(
                "SELECT id FROM transactions WHERE cp_id = ? AND connector_id = ? AND id_tag = ? "
                "AND meter_start = ? AND start_timestamp = ?", key).fetchone()
            if row is not None:
                return row[0], False
            tx_id = conn.execute("UPDATE sequences SET value = value + 1 "
                                 "WHERE name = 'transaction' RETURNING value").fetchone()[0]
            conn.execute(
                "INSERT INTO transactions (id, cp_id, connector_id, id_tag, id_tag_status, "
                "meter_start, start_ts, start_timestamp, reservation_id) VALUES (?,?,?,?,?,?,?,?,?)",
                (tx_id, tx["cp_id"], tx["connector_id"], tx["id_tag"], tx.get("id_tag_status"),
                 tx["meter_start"], tx["start_ts"], tx["start_timestamp"],
                 tx.get("reservation_id")))
            return tx_id, True

        return self._submit_op("transaction", run)

    def stop_transaction(self, cp_id: str, tx_id: int, stop: Row,
                         meter_rows: list[Row] = ()) -> Future:
        """Future of (outcome, transaction row or None). Outcomes: ``stopped``; ``repeated``
        (the same stop again: nothing changes); ``closed`` (a different stop of a closed
        transaction), ``foreign`` (another station's) and ``unknown``: nothing changes."""

        def run(conn: sqlite3.Connection):
            row = conn.execute("SELECT * FROM transactions WHERE id = ?", (tx_id,)).fetchone()
            if row is None:
                return "unknown", None
            row = dict(row)
            if row["cp_id"] != cp_id:
                return "foreign", row
            if row["stop_ts"] is not None:
                same = (row["meter_stop"] == stop["meter_stop"]
                        and abs(row["stop_ts"] - stop["stop_ts"]) < 1e-3)
                return ("repeated" if same else "closed"), row
            conn.execute(
                "UPDATE transactions SET meter_stop = ?, stop_ts = ?, stop_reason = ?, "
                "stop_id_tag = ? WHERE id = ?",
                (stop["meter_stop"], stop["stop_ts"], stop.get("reason"), stop.get("id_tag"),
                 tx_id))
            self._insert_meter_values(conn, meter_rows, row["connector_id"])
            return "stopped", row

        return self._submit_op("transaction", run, 1 + len(meter_rows))

    def open_transaction_count(self) -> int:
        return self._reader().execute(
            "SELECT COUNT(*) FROM transactions WHERE stop_ts IS NULL").fetchone()[0]

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

    _METER_SQL = (
        "INSERT INTO meter_values (cp_id, connector_id, transaction_id, ts, value, measurand, "
        "unit, phase, context, location, format, source, received_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")

    def _insert_meter_values(self, conn: sqlite3.Connection, rows, connector_id=None) -> None:
        if not rows:
            return
        now = time.time()
        conn.executemany(self._METER_SQL, [
            (r["cp_id"], r["connector_id"] if connector_id is None else connector_id,
             r.get("transaction_id"), r["ts"], r["value"], r.get("measurand"), r.get("unit"),
             r.get("phase"), r.get("context"), r.get("location"), r.get("format"), r["source"],
             r.get("received_at") or now) for r in rows])

    def add_meter_values(self, rows: list[Row], cp_id: str | None = None,
                         transaction_id: int | None = None) -> Future:
        """Future of the outcome: ``stored``; for a transaction that is not `cp_id`'s,
        ``foreign`` or ``unknown`` and nothing is stored."""

        def run(conn: sqlite3.Connection):
            if transaction_id is not None:
                row = conn.execute("SELECT cp_id FROM transactions WHERE id = ?",
                                   (transaction_id,)).fetchone()
                if row is None:
                    return "unknown"
                if row[0] != cp_id:
                    return "foreign"
            self._insert_meter_values(conn, rows)
            return "stored"

        return self._submit_op("meter_value", run, max(1, len(rows)))

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
    def add_telemetry(self, row: Row, on_settled=None) -> Future:
        cols = ("cp_id", "ts", "received_at", "seq", *TELEMETRY_COLUMNS)
        return self._submit("telemetry",
                     f"INSERT INTO telemetry ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     tuple(row.get(c) for c in cols), on_settled=on_settled)

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
    def save_ts_channel(self, channel: Row) -> Future:
        cols = ("id", "name", "description", "write_key", "read_key", "public", "field_names",
                "latitude", "longitude", "elevation", "created_at", "updated_at", "last_entry_id")
        values = dict(channel, field_names=json.dumps(channel["field_names"]),
                      public=int(bool(channel.get("public"))))
        return self._submit(
            "ts_channel",
            f"INSERT INTO ts_channels ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            "ON CONFLICT(id) DO UPDATE SET "
            + ", ".join(f"{c}=excluded.{c}" for c in cols if c != "id"),
            tuple(values.get(c) for c in cols))

    def delete_ts_channel(self, channel_id: int) -> Future:
        self._submit("ts_channel", "DELETE FROM ts_feeds WHERE channel_id = ?", (channel_id,))
        return self._submit("ts_channel", "DELETE FROM ts_channels WHERE id = ?", (channel_id,))

    def load_ts_channels(self) -> list[Row]:
        rows = self._all("SELECT * FROM ts_channels ORDER BY id")
        for row in rows:
            row["field_names"] = json.loads(row["field_names"])
            row["public"] = bool(row["public"])
        return rows

    def add_ts_feeds(self, channel_id: int, entries: list[Row]) -> Future:
        cols = ("channel_id", "entry_id", "created_at", *FEED_FIELDS, "status", "latitude",
                "longitude", "elevation")
        now = time.time()
        return self._submit(
            "ts_feed",
            f"INSERT INTO ts_feeds ({', '.join(cols)}, received_at) "
            f"VALUES ({', '.join('?' * len(cols))}, ?)",
            [(*(channel_id if c == "channel_id" else e.get(c) for c in cols), now)
             for e in entries],
            many=True, fail_fast=True)

    def list_ts_feeds(self, channel_id, results=None, start=None, end=None) -> list[Row]:
        rows = self._all(
            "SELECT * FROM ts_feeds WHERE channel_id = ? AND created_at >= ? AND created_at <= ? "
            "ORDER BY entry_id DESC LIMIT ?",
            (channel_id, start or 0, end if end is not None else 1e12,
             results if results is not None else 8000))
        rows.reverse()
        return rows

    def get_ts_feed(self, channel_id, entry_id=None, field=None) -> Row | None:
        if entry_id is not None:
            return self._one("SELECT * FROM ts_feeds WHERE channel_id = ? AND entry_id = ?",
                             (channel_id, entry_id))
        if field is not None:
            if field not in FEED_FIELDS:
                raise ValueError(f"no field {field!r}")
            return self._one(f"SELECT * FROM ts_feeds WHERE channel_id = ? AND {field} IS NOT NULL "
                             "ORDER BY entry_id DESC LIMIT 1", (channel_id,))
        return self._one("SELECT * FROM ts_feeds WHERE channel_id = ? ORDER BY entry_id DESC "
                         "LIMIT 1", (channel_id,))

    def save_bridge(self, bridge: Row) -> Future:
        return self._submit(
            "ts_bridge",
            "INSERT INTO ts_bridges (cp_id, url, channel, write_key, enabled) VALUES (?,?,?,?,?) "
            "ON CONFLICT(cp_id) DO UPDATE SET url=excluded.url, channel=excluded.channel, "
            "write_key=excluded.write_key, enabled=excluded.enabled",
            (bridge["cp_id"], bridge["url"], bridge["channel"], bridge["write_key"],
             int(bool(bridge.get("enabled", True)))))

    def delete_bridge(self, cp_id: str) -> Future:
        return self._submit("ts_bridge", "DELETE FROM ts_bridges WHERE cp_id = ?", (cp_id,))

    def load_bridges(self) -> list[Row]:
        rows = self._all("SELECT * FROM ts_bridges ORDER BY cp_id")
        for row in rows:
            row["enabled"] = bool(row["enabled"])
        return rows

    # Files ----------------------------------------------------------------------
    def add_diagnostics_file(self, row: Row) -> Future:
        return self._submit(
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

    def get_api_token(self, token_id: str) -> Row | None:
        return self._one("SELECT * FROM api_tokens WHERE id = ? AND revoked_at IS NULL",
                         (token_id,))

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
