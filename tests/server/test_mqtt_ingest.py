"""MQTT ingest against the embedded broker and against a real Mosquitto: telemetry stored,
bad payloads counted (never fatal), per-station loss from ``seq``, persistent session."""

from __future__ import annotations

import time

import pytest

from tests.server.conftest import (
    http,
    mqtt_publisher,
    mqtt_station,
    publish,
    register,
    wait_until,
)


@pytest.fixture(params=["embedded", "amqtt", "external"])
def ingest_server(request, start_server):
    """(app, board factory): the embedded Mosquitto, the amqtt fallback (stations with
    their credentials), or an external anonymous Mosquitto the server only reads."""
    if request.param != "external":
        app = start_server({"mqtt.embedded_broker": "auto" if request.param == "embedded"
                            else "amqtt"})
        assert app.broker.kind == ("mosquitto" if request.param == "embedded" else "amqtt")
        return app, lambda cp_id: mqtt_station(app, cp_id)
    broker = request.getfixturevalue("mosquitto")
    app = start_server({"mqtt.url": broker["url"]})
    assert app.broker is None  # an external broker means no embedded one

    def external_station(cp_id: str):
        register(app, cp_id)  # fleet records are for registered stations only
        return mqtt_publisher(broker["port"], cp_id)

    return app, external_station


def _telemetry(seq: int, **extra) -> dict:
    return {"ts": int(time.time()), "seq": seq, "t": 21.5, "rh": 40, "v": 230.2, "a": 15.8,
            "w": 3637, "wh": 1200 + seq, "cp": "C", "st": "Charging", "lim": 16, "rssi": -60,
            "heap": 150000, "up": 100 + seq, "tmcu": 30.1, **extra}


def _stored(app) -> int:
    return http(app, "GET", "/api/v1/stats")[1]["telemetry_stored"]


def test_telemetry_is_validated_stored_and_served_as_a_series(ingest_server):
    app, connect = ingest_server
    board = connect("CP-TEL")
    for seq in (1, 2, 3):
        publish(board, "picocharge/CP-TEL/telemetry", _telemetry(seq))
    wait_until(lambda: _stored(app) == 3)
    _, series = http(app, "GET", "/api/v1/chargepoints/CP-TEL/telemetry")
    assert [row["seq"] for row in series] == [1, 2, 3]
    assert series[0]["v"] == 230.2 and series[0]["st"] == "Charging" and series[0]["cp"] == "C"
    _, record = http(app, "GET", "/api/v1/chargepoints/CP-TEL")
    assert record["telemetry"]["online"] is True and record["telemetry"]["received"] == 3
    board.loop_stop()


def test_bad_payloads_are_counted_and_never_stop_the_ingest(ingest_server):
    app, connect = ingest_server
    board = connect("CP-BAD")
    publish(board, "picocharge/CP-BAD/telemetry", b"{not json")
    publish(board, "picocharge/CP-BAD/telemetry", {"ts": 1, "seq": "one"})
    publish(board, "picocharge/CP-BAD/telemetry", {"ts": 1})
    publish(board, "picocharge/CP-BAD/telemetry", _telemetry(1, st="Flying"))
    publish(board, "picocharge/CP-BAD/telemetry", _telemetry(1, pad="x" * 300))
    publish(board, "picocharge/CP-BAD/state", "sleepy")
    publish(board, "picocharge/CP-BAD/telemetry", _telemetry(1))
    wait_until(lambda: _stored(app) == 1)
    counters = http(app, "GET", "/api/v1/telemetry/stats")[1]["counters"]
    assert counters["invalid"] == 6
    assert counters["invalid.json"] == 1 and counters["invalid.schema"] == 3
    assert counters["invalid.size"] == 1 and counters["invalid.state"] == 1
    _, record = http(app, "GET", "/api/v1/chargepoints/CP-BAD")
    assert record["telemetry"]["invalid"] == 6
    board.loop_stop()


def test_loss_is_counted_from_seq_gaps_but_a_reboot_is_not_loss(ingest_server):
    app, connect = ingest_server
    board = connect("CP-LOSS")
    for seq in (1, 2, 5, 6):          # 3 and 4 lost
        publish(board, "picocharge/CP-LOSS/telemetry", _telemetry(seq))
    publish(board, "picocharge/CP-LOSS/telemetry", _telemetry(6))     # redelivered duplicate
    for seq in (0, 1, 2):             # reboot: counter starts again
        publish(board, "picocharge/CP-LOSS/telemetry", _telemetry(seq, up=seq))
    wait_until(lambda: _stored(app) == 7)
    _, record = http(app, "GET", "/api/v1/chargepoints/CP-LOSS")
    telemetry = record["telemetry"]
    assert (telemetry["received"], telemetry["lost"], telemetry["duplicates"],
            telemetry["reboots"]) == (7, 2, 1, 1)
    board.loop_stop()


def test_a_board_that_reboots_early_has_its_new_messages_stored_not_taken_for_duplicates(
        ingest_server):
    # the board numbers from 1 again after a reboot; the seqs of its previous boot are still
    # among the recent ones, but a redelivery repeats ts and up as well, a new boot does not
    app, connect = ingest_server
    board = connect("CP-REBOOT")
    for seq in (1, 2, 3):
        publish(board, "picocharge/CP-REBOOT/telemetry", _telemetry(seq, up=60 * seq))
    for seq in (1, 2, 3):             # rebooted after three minutes
        publish(board, "picocharge/CP-REBOOT/telemetry", _telemetry(seq, up=2 + seq))
    publish(board, "picocharge/CP-REBOOT/telemetry", _telemetry(3, up=5))  # redelivered
    wait_until(lambda: _stored(app) == 6)
    _, series = http(app, "GET", "/api/v1/chargepoints/CP-REBOOT/telemetry")
    assert sorted((row["seq"], row["up"]) for row in series) == [
        (1, 3), (1, 60), (2, 4), (2, 120), (3, 5), (3, 180)]
    _, record = http(app, "GET", "/api/v1/chargepoints/CP-REBOOT")
    telemetry = record["telemetry"]
    assert (telemetry["received"], telemetry["duplicates"], telemetry["reboots"]) == (6, 1, 1)
    board.loop_stop()


def test_persistent_session_delivers_what_was_published_while_the_server_was_down(
        mosquitto, start_server, tmp_path):
    app = start_server({"mqtt.url": mosquitto["url"]})
    app.stop()
    board = mqtt_publisher(mosquitto["port"])
    publish(board, "picocharge/CP-AWAY/telemetry", _telemetry(1))
    publish(board, "picocharge/CP-AWAY/telemetry", _telemetry(2))
    board.loop_stop()
    again = start_server({"mqtt.url": mosquitto["url"]})
    wait_until(lambda: _stored(again) == 2, timeout=10)
    _, series = http(again, "GET", "/api/v1/chargepoints/CP-AWAY/telemetry")
    assert [row["seq"] for row in series] == [1, 2]


def test_a_message_arriving_after_newer_ones_is_stored_not_taken_for_a_duplicate(ingest_server):
    # QoS 1 keeps order on one connection only: after a reconnect a station may resend
    # what was in flight after newer messages
    app, connect = ingest_server
    board = connect("CP-LATE")
    for seq in (1, 2, 4, 5, 3):
        publish(board, "picocharge/CP-LATE/telemetry", _telemetry(seq))
    publish(board, "picocharge/CP-LATE/telemetry", _telemetry(3))  # now a real duplicate
    wait_until(lambda: _stored(app) == 5)
    _, series = http(app, "GET", "/api/v1/chargepoints/CP-LATE/telemetry")
    assert sorted(row["seq"] for row in series) == [1, 2, 3, 4, 5]
    _, record = http(app, "GET", "/api/v1/chargepoints/CP-LATE")
    assert (record["telemetry"]["lost"], record["telemetry"]["duplicates"]) == (0, 1)
    board.loop_stop()


def test_the_embedded_broker_keeps_queued_telemetry_across_a_clean_restart(start_server):
    # the ingest is away (its persistent session stays); what stations publish meanwhile is
    # queued by Mosquitto, written to its persistence file when the server stops it, and
    # delivered once both are back
    app = start_server()
    board = mqtt_station(app, "CP-QUEUED")
    app.ingest.stop()
    publish(board, "picocharge/CP-QUEUED/telemetry", _telemetry(1))
    publish(board, "picocharge/CP-QUEUED/telemetry", _telemetry(2))
    board.loop_stop()
    app.stop()
    again = start_server()
    assert again.ports["mqtt"] == app.ports["mqtt"]  # port 0 asked: the same one again
    wait_until(lambda: _stored(again) == 2, timeout=15)
    _, series = http(again, "GET", "/api/v1/chargepoints/CP-QUEUED/telemetry")
    assert [row["seq"] for row in series] == [1, 2]
