"""`python -m server backup FILE` copies the database consistently while the server keeps
writing, and a damaged database is reported at start with what to do."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys

from serverproc import REPO, ServerProcess

from tests.server.test_answered_means_committed import _starts


def test_backup_while_the_server_writes_is_a_consistent_usable_copy(tmp_path):
    data_dir = tmp_path / "var"
    server = ServerProcess(data_dir, "--auto-register", "--set",
                           "ocpp.rate_limit_per_second=0").start()
    try:
        async def traffic_and_backup():
            writing = asyncio.create_task(_starts(server.ports["ocpp"], "CP-BACKUP", 300, 1))
            await asyncio.sleep(0.3)  # the backup runs while transactions are being written
            copy = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server", "backup", str(tmp_path / "copy.db"),
                "--data-dir", str(data_dir), cwd=REPO, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
            output, _ = await copy.communicate()
            return await writing, copy.returncode, output.decode()

        answered, returncode, output = asyncio.run(traffic_and_backup())
    finally:
        server.kill()
    assert returncode == 0, output
    assert "backup of" in output and "schema version" in output
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    copied = [row[0] for row in copy.execute("SELECT id FROM transactions ORDER BY id")]
    # a prefix of what was answered: consistent at one moment, nothing half-written
    assert copied == sorted(answered)[:len(copied)]
    print(f"backup held {len(copied)} of {len(answered)} transactions")
    copy.close()

    # the copy is a database the server starts on
    restored = tmp_path / "restored"
    restored.mkdir()
    (tmp_path / "copy.db").rename(restored / "picocharge.db")
    again = ServerProcess(restored).start()
    again.kill()


def test_a_damaged_database_is_reported_at_start_with_what_to_do(tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    database = data_dir / "picocharge.db"
    good = sqlite3.connect(database)
    good.execute("CREATE TABLE filler (x TEXT)")
    good.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,) for _ in range(200)])
    good.commit()
    good.close()
    raw = bytearray(database.read_bytes())
    raw[4096:8192] = b"\xff" * 4096  # a page overwritten by garbage
    database.write_bytes(bytes(raw))

    result = subprocess.run([sys.executable, "-m", "server", "--data-dir", str(data_dir),
                             "--ocpp-port", "0", "--http-port", "0", "--mqtt-port", "0"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    message = result.stderr
    assert "is damaged" in message and str(database) in message
    assert "restore your latest backup" in message and ".recover" in message


def test_backup_of_a_missing_database_fails_clearly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "server", "backup", str(tmp_path / "b.db"),
                             "--data-dir", str(tmp_path / "nothing")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "backup failed: no database at" in result.stderr
