"""server/mqtt/credentials.py: a key change is durable when it returns (appended to
``passwd.journal`` and fsynced) without rewriting the password file, whose size grows with
the fleet; the files are brought up to date once per batch (flush), and a restart after a
crash replays the journal."""

from __future__ import annotations

import pytest

from server.mqtt.credentials import BrokerCredentials, check_mosquitto_hash, read_password_file

pytestmark = pytest.mark.unit

ACCEPTED = [{"id": f"CP-{n}", "auth_key_hash": "x", "registration": "Accepted"} for n in range(3)]


def credentials(tmp_path) -> BrokerCredentials:
    creds = BrokerCredentials(tmp_path, "picocharge-central", "picocharge")
    creds.load([])
    return creds


def test_a_key_change_is_journaled_and_the_password_file_is_written_only_by_flush(tmp_path):
    creds = credentials(tmp_path)
    before = creds.password_file.read_text()
    for n in range(3):
        creds.set_station(f"CP-{n}", f"key-of-station-{n}-0123")
    assert creds.password_file.read_text() == before
    assert creds.journal_file.read_text().count("\n") == 3
    creds.flush()
    users = read_password_file(creds.password_file)
    assert all(check_mosquitto_hash(f"key-of-station-{n}-0123", users[f"CP-{n}"])
               for n in range(3))
    assert creds.journal_file.read_text() == ""


def test_a_restart_after_a_crash_before_the_flush_keeps_every_acknowledged_change(tmp_path):
    creds = credentials(tmp_path)
    for n in range(3):
        creds.set_station(f"CP-{n}", f"key-of-station-{n}-0123")
    creds.flush()
    creds.set_station("CP-1", None)  # deleted after the flush
    creds.set_station("CP-2", "a-new-key-for-station-2")
    with open(creds.journal_file, "a") as journal:
        journal.write("CP-9")  # torn by the crash: no separator, ignored
    again = BrokerCredentials(tmp_path, "picocharge-central", "picocharge")
    again.load([record for record in ACCEPTED if record["id"] != "CP-1"])
    users = read_password_file(again.password_file)
    assert set(users) == {"picocharge-central", "CP-0", "CP-2"}
    assert check_mosquitto_hash("a-new-key-for-station-2", users["CP-2"])
    assert again.journal_file.read_text() == ""
