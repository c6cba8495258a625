"""The SQLite store: WAL, schema migrations with a version table, batched writes visible
after sync, everything flushed on close, retention."""

from __future__ import annotations

import sqlite3
import time

import pytest

from server.store.migrations import MIGRATIONS
from server.store.sqlite import SQLiteStore

pytestmark = pytest.mark.unit  # a store in tmp_path (its writer thread): no process or server


def test_schema_is_migrated_once_and_versioned(tmp_path):
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    assert store.schema_version == MIGRATIONS[-1][0]
    store.close()
    again = SQLiteStore(path)  # reopening applies nothing twice
    again.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = db.execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(v,) for v, _, _ in MIGRATIONS]


def test_writes_are_batched_and_visible_after_sync(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    for i in range(5000):
        store.add_telemetry({"cp_id": "CP", "ts": i, "received_at": i, "seq": i, "v": 230.0})
    store.sync()
    assert len(store.list_telemetry("CP", limit=10000)) == 5000
    stats = store.stats()
    assert stats["committed"]["telemetry"] == 5000
    assert stats["batches"] < 5000  # many writes per commit
    store.close()


def test_close_flushes_every_accepted_write(tmp_path):
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    for i in range(3000):
        store.add_event(time.time(), "CP", "test", {"i": i})
    store.close()
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM events").fetchone()[0] == 3000


def test_retention_goes_by_the_servers_receive_time_not_the_stations_clock(tmp_path):
    now = time.time()
    old = now - 2 * 86400
    report = tmp_path / "diag-old.txt"
    report.write_text("old diagnostics")
    store = SQLiteStore(tmp_path / "s.db", retention_days={
        "telemetry": 1, "meter_values": 1, "data_transfers": 1, "diagnostics_files": 1,
        "events": 0})
    # a station whose clock claims 1970 is kept: the server received it just now
    store.add_telemetry({"cp_id": "CP", "ts": 1, "received_at": now, "seq": 1})
    store.add_telemetry({"cp_id": "CP", "ts": now, "received_at": old, "seq": 2})
    meter = {"cp_id": "CP", "connector_id": 1, "value": "1", "source": "MeterValues"}
    store.add_meter_values([dict(meter, ts=1.0), dict(meter, ts=now, received_at=old)])
    store.add_data_transfer({"ts": old, "cp_id": "CP", "direction": "in", "vendor_id": "V"})
    store.add_diagnostics_file({"cp_id": "CP", "filename": "d", "path": str(report), "size": 15,
                                "sha256": "x", "received_at": old})
    store.add_event(now - 10 * 86400, "CP", "old", None)
    store.sync()
    assert store.purge_expired(now) == {"telemetry": 1, "meter_values": 1, "data_transfers": 1,
                                        "diagnostics_files": 1}
    assert [r["seq"] for r in store.list_telemetry("CP")] == [1]
    assert [r["ts"] for r in store.list_meter_values("CP")] == [1.0]
    assert store.list_diagnostics_files() == [] and not report.exists()
    assert len(store.list_events()) == 1  # 0 days = keep forever
    store.close()


def test_dashboard_queries_use_indexes(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    db = sqlite3.connect(tmp_path / "s.db")
    for sql in ("SELECT * FROM telemetry WHERE cp_id = 'x' AND ts >= 0 ORDER BY ts DESC LIMIT 10",
                "SELECT * FROM events WHERE ts >= 0 AND cp_id = 'x' ORDER BY ts DESC LIMIT 10",
                "SELECT * FROM status_history WHERE cp_id = 'x' AND received_at >= 0",
                "SELECT * FROM meter_values WHERE transaction_id = 3"):
        plan = " ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (sql, plan)
    store.close()


def test_snapshot_rows_are_coalesced_and_the_newest_one_is_written(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    for n in range(1, 501):
        for cp in ("CP-A", "CP-B"):
            store.save_telemetry_stats({"cp_id": cp, "received": n, "lost": 0, "duplicates": 0,
                                        "reboots": 0, "invalid": 0, "last_seq": n, "last_up": n,
                                        "updated_at": float(n)})
    store.sync()
    rows = {r["cp_id"]: r for r in store.load_telemetry_stats()}
    assert rows["CP-A"]["received"] == rows["CP-B"]["received"] == 500
    stats = store.stats()
    assert stats["accepted"]["telemetry_stats"] == stats["committed"]["telemetry_stats"] == 1000
    assert stats["batches"] < 1000  # not one write per update
    store.save_telemetry_stats({"cp_id": "CP-A", "received": 501, "lost": 0, "duplicates": 0,
                                "reboots": 0, "invalid": 0, "last_seq": 501, "last_up": 501,
                                "updated_at": 501.0})
    store.close()  # a pending snapshot is written on close
    reopened = SQLiteStore(tmp_path / "s.db")
    assert {r["cp_id"]: r["received"] for r in reopened.load_telemetry_stats()}["CP-A"] == 501
    reopened.close()
