"""A database that cannot commit (a really full file system: a small tmpfs filled to the
last byte) never kills the store and never loses what it accepted: the writer holds and
retries, /health says 503 and why, OCPP answers InternalError instead of an id, writes
over the API get 503, MQTT telemetry is not acknowledged, and once there is room again
everything held is committed without a restart. A single write SQLite refuses is
rejected alone."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import time
import uuid

import pytest

# imported once, at collection: another directory's conftest.py (tests/unit) is the module
# named `conftest` by the time a test runs
from conftest import (
    charge_point,
    exchange,
    http,
    mqtt_publisher,
    publish,
    raw_socket,
    register,
    run,
)
from conftest import wait_until as wait_for

from server.store.sqlite import SQLiteStore
from server.store.writer import WriteRejected


@pytest.fixture
def small_filesystem(tmp_path):
    """A 4 MiB tmpfs (mounting needs root, which the test bench runs as)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"cannot mount a tmpfs (needs root): {result.stderr}"
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory) -> None:
    """Fill the file system to the last byte."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def free(directory) -> None:
    (directory / "filler").unlink()


def start_tx(unique: str, meter: int) -> list:
    return [2, unique, "StartTransaction", {"connectorId": 1, "idTag": "TAG", "meterStart": meter,
                                            "timestamp": "2026-11-30T12:00:00Z"}]


def test_a_full_disk_is_survived_reported_and_recovered_without_losing_anything(
        small_filesystem, mosquitto, start_server):
    app = start_server({"server.data_dir": str(small_filesystem / "var"),
                        "mqtt.url": mosquitto["url"], "store.commit_timeout": 5.0})
    register(app, "CP-FULL")
    board = mqtt_publisher(mosquitto["port"], client_id="board-full")

    async def before_and_during():
        async with charge_point(app, "CP-FULL"):
            pass
        async with raw_socket(app, "CP-FULL") as ws:
            ok = await exchange(ws, start_tx("first", 1))
            assert ok[0] == 3
            fill(small_filesystem)
            refused = await exchange(ws, start_tx("second", 2))
            assert refused[0] == 4 and refused[2] == "InternalError", refused
            # while the store is known to fail, a write is refused without being queued
            again = await exchange(ws, start_tx("second-again", 2))
            assert again[0] == 4 and again[2] == "InternalError", again
            return ok[2]["transactionId"]

    first_tx = run(before_and_during())
    status, health = http(app, "GET", "/api/v1/health")
    assert status == 503 and "full" in health["reason"], health
    status, body = http(app, "POST", "/api/v1/idtags", {"id_tag": "DURING"})
    assert status == 503, body
    for seq in range(1, 6):
        publish(board, "picocharge/CP-FULL/telemetry", {"ts": time.time(), "seq": seq, "v": 230.0})
    # reads keep working from what is committed
    status, listing = http(app, "GET", "/api/v1/chargepoints/CP-FULL")
    assert status == 200 and listing["id"] == "CP-FULL"
    assert app.store._writer._thread.is_alive()

    free(small_filesystem)
    wait_for(lambda: http(app, "GET", "/api/v1/health")[0] == 200, timeout=15)
    wait_for(lambda: len(http(app, "GET", "/api/v1/chargepoints/CP-FULL/telemetry")[1]) == 5,
             timeout=15)
    _, series = http(app, "GET", "/api/v1/chargepoints/CP-FULL/telemetry")
    assert [row["seq"] for row in series] == [1, 2, 3, 4, 5]

    async def after():
        async with raw_socket(app, "CP-FULL") as ws:
            retried = await exchange(ws, start_tx("second-retry", 2))
            assert retried[0] == 3, retried
            return retried[2]["transactionId"]

    second_tx = run(after())
    _, txs = http(app, "GET", "/api/v1/transactions?cp_id=CP-FULL")
    assert sorted(t["id"] for t in txs) == sorted([first_tx, second_tx])
    assert second_tx > first_tx
    board.loop_stop()
    board.disconnect()


def test_a_store_closed_while_the_disk_is_full_says_what_it_could_not_commit(
        small_filesystem, caplog):
    store = SQLiteStore(small_filesystem / "s.db", close_timeout=1.0)
    store.add_event(time.time(), "CP", "before", None)
    store.sync()
    fill(small_filesystem)
    for i in range(50):
        store.add_event(time.time(), "CP", "during", {"i": i, "pad": uuid.uuid4().hex * 40})
    wait_for(lambda: store.failure is not None, timeout=10)
    with caplog.at_level(logging.ERROR):
        store.close()
    assert store.unwritten == {"event": 50}
    assert "50 accepted writes NOT committed" in caplog.text


def test_the_writer_keeps_retrying_and_commits_everything_once_there_is_room(small_filesystem):
    store = SQLiteStore(small_filesystem / "s.db")
    fill(small_filesystem)
    futures = [store.add_event(time.time(), "CP", "held", {"i": i, "pad": "x" * 2000})
               for i in range(200)]
    acknowledged = []  # what the MQTT ingest would PUBACK
    store.add_telemetry({"cp_id": "CP", "ts": 1.0, "received_at": time.time(), "seq": 1},
                        on_settled=acknowledged.append)
    wait_for(lambda: store.failure is not None and store._writer.failed_attempts >= 3,
             timeout=10)
    assert store.health()["ok"] is False
    assert not any(f.done() for f in futures) and acknowledged == []
    free(small_filesystem)
    for future in futures:
        future.result(timeout=15)
    assert acknowledged == [True]
    assert store.health() == {"ok": True}
    assert len(store.list_events(kind="held", limit=1000)) == 200
    store.close()
    assert store.unwritten == {}


def test_one_write_sqlite_refuses_is_rejected_alone_and_the_batch_commits(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    good = [store.add_event(time.time(), "CP", "good", {"i": i}) for i in range(3)]
    # a value SQLite cannot bind (an object where text belongs), queued amid good writes
    bad = store.add_data_transfer({"ts": time.time(), "cp_id": "CP", "direction": "in",
                                   "vendor_id": {"not": "text"}})
    good += [store.add_event(time.time(), "CP", "good", {"i": i}) for i in range(3, 6)]
    with pytest.raises(WriteRejected):
        bad.result(10)
    for future in good:
        future.result(10)
    assert len(store.list_events(kind="good")) == 6
    assert store.health() == {"ok": True}
    assert store.stats()["rejected_writes"] == {"data_transfer": 1}
    store.close()
