"""Telemetry inside the OCPP session (telemetry_ocpp.py), asked for with `mqtt.via: "ocpp"`,
against the independent central system: every report is a DataTransfer PicoCharge /
telemetry whose data is the MQTT report's JSON; a report the central system did not
accept (a CALLERROR, no answer) stays buffered and goes again, so every seq arrives once,
in order; transaction messages still go out while reports are sent."""

import json

import pytest
from ocpp.v16 import call
from test_firmware_update import CP, WORLD, board_config

CS_HEARTBEAT_S = 5


def reports(cs):
    """The telemetry reports the central system accepted, in arrival order."""
    return [json.loads(m["data"]) for m in cs.of("DataTransfer", CP)
            if m.get("vendor_id") == "PicoCharge" and m.get("message_id") == "telemetry"]


@pytest.mark.dual_runtime
def test_reports_ride_in_the_ocpp_session_and_a_refused_one_is_sent_again(
        cs, board_factory, runtime_name):
    config = board_config(cs.url)
    config["ocpp"]["call_timeout_s"] = 3
    config["mqtt"] = {"via": "ocpp", "max_backoff_s": 2}
    config["intervals"]["telemetry_s"] = 1
    cs.tags["CARD-1"] = "Accepted"
    board = board_factory(config, world=WORLD)
    board.wait_for(r"^mqtt: telemetry goes inside the OCPP session \(DataTransfer\), as mqtt.via says",
                   timeout=30)
    cs.wait(lambda: len(reports(cs)) >= 3, 60, "reports as DataTransfer")
    first = reports(cs)[0]
    assert set(first) >= {"ts", "seq", "v", "wh", "st", "up"} and first["seq"] == 1, first
    assert len(cs.of("DataTransfer", CP)[0]["data"]) <= 256

    # refused twice (CALLERROR), then not answered at all: the report stays buffered
    with cs.lock:
        cs.fail_next["DataTransfer"] = 2
    cs.wait(lambda: len([f for f in cs.failed if f[0] == "DataTransfer"]) == 2, 30, "two refusals")
    with cs.lock:
        cs.silent_next["DataTransfer"] = 1
    seen = len(reports(cs))
    cs.wait(lambda: len(reports(cs)) >= seen + 5, 90, "reports after the refusals")

    # a charging session meanwhile: its transaction messages go out as ever
    board.control("plug", demand_a=16)
    cs.call(CP, call.RemoteStartTransaction(id_tag="CARD-1", connector_id=1))
    cs.wait(lambda: cs.transactions, 60, "StartTransaction")
    txid = max(cs.transactions)
    cs.wait(lambda: len(cs.transactions[txid]["values"]) >= 3, 60, "meter values while charging")
    board.control("unplug")
    cs.wait(lambda: cs.transactions[txid]["meter_stop"] is not None, 60, "StopTransaction")
    seen = len(reports(cs))
    cs.wait(lambda: len(reports(cs)) >= seen + 2, 30, "reports after the session")

    seqs = [r["seq"] for r in reports(cs)]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # each once, in order, none lost
    assert any(r.get("st") == "Charging" for r in reports(cs))
    assert cs.invalid == []
    mark = board.console.mark()
    board.control("console", line="import ev; ev.status()")
    board.wait_for(r"^uplinks .*telemetry via ocpp \(mqtt\.via; \d+ sent, \d+ buffered\)", start=mark)
    assert "mqtt: connect" not in board.console.text  # no broker was dialled
    assert "Traceback" not in board.console.text and "MemoryError" not in board.console.text
