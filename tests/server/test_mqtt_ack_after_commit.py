"""Telemetry accepted from the broker is acknowledged only once it is committed: a server
that dies between receipt and commit gets the messages again from the broker, and the persisted
position never steps back (a late message must not make a redelivered one look new)."""

import json

from conftest import http, make_config, mqtt_publisher, publish, wait_until

from server.fleet import Fleet
from server.mqtt.ingest import MqttIngest, parse_broker_url
from server.store.sqlite import SQLiteStore


class StoreThatNeverCommits(SQLiteStore):
    """Takes rows like the real store but dies before committing them (a crash)."""

    def __init__(self, path):
        super().__init__(path)
        self.taken = []

    def add_telemetry(self, row, on_settled=None):
        self.taken.append(row["seq"])


def test_telemetry_received_but_not_committed_is_delivered_again_after_a_crash(
        mosquitto, start_server, tmp_path):
    config = make_config(tmp_path, {"mqtt.url": mosquitto["url"]})
    doomed_store = StoreThatNeverCommits(tmp_path / "doomed.db")
    ingest = MqttIngest(config, doomed_store, Fleet(doomed_store))
    ingest.start(parse_broker_url(mosquitto["url"]))
    board = mqtt_publisher(mosquitto["port"])
    for seq in (1, 2, 3):
        publish(board, "picocharge/CP-CRASH/telemetry", {"ts": 1795000000 + seq, "seq": seq, "t": 20.0})
    wait_until(lambda: doomed_store.taken == [1, 2, 3], timeout=10)
    # The crash: the process vanishes without a DISCONNECT and without acknowledging.
    ingest.loop.stop(disconnect=False)
    ingest.client.socket().close()
    doomed_store.close()

    app = start_server({"mqtt.url": mosquitto["url"]})  # same client id, persistent session
    wait_until(lambda: http(app, "GET", "/api/v1/stats")[1]["telemetry_stored"] == 3, timeout=15)
    _, series = http(app, "GET", "/api/v1/chargepoints/CP-CRASH/telemetry")
    assert [row["seq"] for row in series] == [1, 2, 3]
    board.loop_stop()


def test_a_late_message_does_not_move_the_committed_position_back(tmp_path):
    """Seq 5 and 7 are committed, then 6 arrives late and is stored: the persisted position
    stays at 7, so after a restart a redelivered 7 is a duplicate, not a second row."""
    config = make_config(tmp_path)
    path = tmp_path / "telemetry.db"
    store = SQLiteStore(path)
    ingest = MqttIngest(config, store, Fleet(store))
    for seq in (5, 7, 6):
        payload = json.dumps({"ts": 1795000000 + seq, "seq": seq, "up": 100 + seq, "t": 20.0})
        assert ingest.handle("picocharge/CP-LATE/telemetry", payload.encode(), lambda: None)
    store.sync()
    store.close()

    store = SQLiteStore(path)
    restarted = MqttIngest(config, store, Fleet(store))
    redelivered = json.dumps({"ts": 1795000007, "seq": 7, "up": 107, "t": 20.0}).encode()
    restarted.handle("picocharge/CP-LATE/telemetry", redelivered, lambda: None)
    store.sync()
    assert sorted(row["seq"] for row in store.list_telemetry("CP-LATE")) == [5, 6, 7]
    assert restarted.counters["duplicates"] == 1
    store.close()
