"""The ThingSpeak bridge forwards a station's telemetry to its channel (here: this
server's own ThingSpeak-compatible endpoint, never the cloud) within the 15 s rule,
averaging each window, and catches up with bulk_update.json after a gap."""

from __future__ import annotations

import time

from server.thingspeak.bridge import window_entry
from tests.server.conftest import http, mqtt_station, publish, wait_until


def test_window_entry_averages_and_maps_fields_as_the_architecture_says():
    rows = [{"ts": 100, "t": 20.0, "rh": 40, "v": 229, "a": 10, "w": 2290, "wh": 1000,
             "st": "Charging", "tmcu": 30},
            {"ts": 115, "t": 22.0, "rh": 42, "v": 231, "a": 12, "w": 2772, "wh": 1500,
             "st": "Finishing", "tmcu": 32}]
    entry = window_entry(rows)
    assert entry == {"created_at": "1970-01-01T00:01:55Z", "field1": 21.0, "field2": 41.0,
                     "field3": 230.0, "field4": 11.0, "field5": 2531.0, "field6": 1.5,
                     "field7": 5, "field8": 31.0, "status": "Finishing"}


def _setup(app, interval_s: float):
    status, channel = http(app, "POST", "/api/v1/thingspeak/channels",
                           {"name": "CP-BRIDGE", "public": True})
    assert status == 201
    status, _ = http(app, "PUT", "/api/v1/chargepoints/CP-BRIDGE/thingspeak",
                     {"url": f"http://127.0.0.1:{app.ports['http']}", "channel": channel["id"],
                      "write_key": channel["write_key"]})
    assert status == 200
    return channel


def _feeds(app, channel_id: int) -> list:
    return http(app, "GET", f"/channels/{channel_id}/feeds.json?results=100")[1]["feeds"]


def _target(app) -> dict:
    return http(app, "GET", "/api/v1/chargepoints/CP-BRIDGE/thingspeak")[1]


def test_bridge_forwards_averaged_windows_no_faster_than_the_rule(start_server):
    interval = 2.0  # the three messages must reach the server within one window, also when loaded
    app = start_server({"thingspeak.min_interval": interval, "thingspeak.bridge_interval": interval,
                        "thingspeak.allow_private_targets": True})  # the fake is on loopback
    channel = _setup(app, interval)
    board = mqtt_station(app, "CP-BRIDGE")
    for seq, temperature in enumerate((20.0, 22.0, 24.0), start=1):
        publish(board, "picocharge/CP-BRIDGE/telemetry",
                {"ts": time.time(), "seq": seq, "t": temperature, "st": "Charging"})
    wait_until(lambda: _feeds(app, channel["id"]), timeout=10)
    first = _feeds(app, channel["id"])
    assert [(f["field1"], f["field7"]) for f in first] == [("22.0", "2")]
    publish(board, "picocharge/CP-BRIDGE/telemetry", {"ts": time.time(), "seq": 4, "t": 30.0})
    wait_until(lambda: len(_feeds(app, channel["id"])) == 2, timeout=10)
    # the channel stores the entry before the bridge has read the answer and counted it
    target = wait_until(lambda: (t := _target(app))["entries_sent"] == 2 and t, timeout=10)
    assert target["failures"] == 0
    # The server's own endpoint enforces the same interval: had the bridge posted too
    # early it would have been answered 0 and counted as a failure.
    board.loop_stop()


def test_bridge_catches_up_with_bulk_update_after_a_gap(start_server):
    interval = 0.5
    app = start_server({"thingspeak.min_interval": interval, "thingspeak.bridge_interval": interval,
                        "thingspeak.allow_private_targets": True})  # the fake is on loopback
    channel = _setup(app, interval)
    http(app, "PUT", "/api/v1/chargepoints/CP-BRIDGE/thingspeak",
         {"url": f"http://127.0.0.1:{app.ports['http']}", "channel": channel["id"],
          "write_key": "WRONGKEY0000000"})  # the channel refuses: a gap builds up
    board = mqtt_station(app, "CP-BRIDGE")
    for seq in range(1, 5):
        publish(board, "picocharge/CP-BRIDGE/telemetry", {"ts": time.time(), "seq": seq, "t": 20 + seq})
        # one message per window: the next is sent once this one's window is closed and waiting
        wait_until(lambda n=seq: _target(app)["backlog"] == n, timeout=10)
    assert _target(app)["failures"] >= 1
    http(app, "PUT", "/api/v1/chargepoints/CP-BRIDGE/thingspeak",
         {"url": f"http://127.0.0.1:{app.ports['http']}", "channel": channel["id"],
          "write_key": channel["write_key"]})
    target = wait_until(lambda: (t := _target(app))["backlog"] == 0 and t, timeout=10)
    assert target["bulk_requests"] >= 1
    feeds = _feeds(app, channel["id"])
    assert [f["field1"] for f in feeds] == ["21.0", "22.0", "23.0", "24.0"]
    board.loop_stop()
