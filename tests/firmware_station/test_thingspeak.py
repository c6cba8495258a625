"""ThingSpeak uplink on both runtimes against a local recorder that answers as ThingSpeak
does: the documented wire format (thingspeak_wire.json), the contract's field map, the
15 s rule under a 1 s sample rate, error counting, the bulk backlog, MQTT publishing."""

import json
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from stationkit import Subscriber, ThingSpeakRecorder, boot, report, wait_until

WIRE = json.loads((Path(__file__).parent / "thingspeak_wire.json").read_text())
KEY = "WRITEKEY0123ABCD"
WORLD = {"ap_ssid": "workshop", "ambient_c": 20.0, "humidity": 50.0, "mcu_c": 35.0}


def config(url, **extra):
    ts = {"url": url, "channel": 987654, "write_key": KEY}
    ts.update(extra)
    return {"cp_id": "PICO-0099", "wifi": {"ssid": "workshop", "password": "x"},
            "thingspeak": ts, "intervals": {"sensors_s": 2}}


def check_update(req):
    spec = WIRE["update"]
    assert req["method"] == spec["method"] and req["path"] == spec["path"]
    assert req["headers"]["content-type"] == spec["content_type"]
    form = parse_qs(req["body"].decode(), strict_parsing=True)
    assert set(spec["required"]) <= set(form)
    assert set(form) <= set(spec["required"]) | set(spec["optional"]), set(form)
    assert all(len(v) == 1 for v in form.values())
    return {k: v[0] for k, v in form.items()}


# The 15 s rule takes two real intervals (31 s), so it runs on the MicroPython board only;
# the wire format of an update is also checked on both runtimes in the next test.
@pytest.mark.parametrize("runtime", ["micropython-picow"])
def test_updates_follow_the_wire_format_and_the_15_s_rule_with_averaging(
        board_factory, thingspeak_recorder):
    board = boot(board_factory, config(thingspeak_recorder.url), world=WORLD)
    board.wait_for(r"^thingspeak: channel 987654 at http://127\.0\.0\.1:\d+, one update per 15 s$")
    board.control("plug", demand_a=16)
    board.control("temperature", value=20.0)
    time.sleep(7)
    board.control("temperature", value=30.0)  # part of the interval at 20 C, part at 30 C
    wait_until(lambda: len(thingspeak_recorder.snapshot()) >= 2, timeout=60, interval=0.5,
               what="two updates")
    reqs = thingspeak_recorder.snapshot()
    gap = reqs[1]["t"] - reqs[0]["t"]
    assert gap >= 15.0, f"two updates {gap:.1f} s apart: ThingSpeak's free tier rejects that"
    first, second = check_update(reqs[0]), check_update(reqs[1])
    assert first["api_key"] == KEY
    assert set(first) == {"api_key", "status"} | {f"field{i}" for i in range(1, 9)}
    # field1 is the mean of 1 s samples: between the 20 C and 30 C the DHT11 reported
    assert 21.0 <= float(first["field1"]) <= 29.0, first["field1"]
    assert float(first["field2"]) == pytest.approx(50, abs=3)
    assert float(first["field3"]) == pytest.approx(230, abs=3)
    assert float(first["field8"]) == pytest.approx(35, abs=1)
    # contract: field4 A, field5 W, field6 kWh, field7 status code, status text
    assert float(second["field4"]) == pytest.approx(16, abs=0.4)
    assert float(second["field5"]) == pytest.approx(3680, rel=0.02)
    assert second["field7"] == "2" and second["status"] == "Charging"
    assert float(second["field6"]) > float(first["field6"]) > 0
    r = report(board)
    assert float(second["field6"]) <= r["wh"] / 1000 + 0.0005  # kWh with 3 decimals


@pytest.mark.dual_runtime
def test_rejected_and_failed_updates_are_counted_and_sent_later_in_one_bulk_update(
        board_factory, thingspeak_recorder):
    rec = thingspeak_recorder
    # an own server (or a paid channel) may take updates faster than the free tier
    board = boot(board_factory, config(rec.url, interval_s=2, min_interval_s=2), world=WORLD)
    wait_until(lambda: len(rec.snapshot()) >= 1, timeout=30, what="a first update")
    first = check_update(rec.snapshot()[0])
    assert first["api_key"] == KEY and first["field7"] == "0" and first["status"] == "Available"
    assert float(first["field3"]) == pytest.approx(230, abs=3)
    rec.mode = "zero"
    wait_until(lambda: any(r["mode"] == "zero" for r in rec.snapshot()), timeout=30)
    rec.mode = "error"
    wait_until(lambda: sum(r["mode"] == "error" for r in rec.snapshot()) >= 2, timeout=30)
    rec.mode = "ok"
    wait_until(lambda: any(r["path"].endswith("bulk_update.json") and r["mode"] == "ok"
                           for r in rec.snapshot()), timeout=30, what="the bulk update")
    reqs = rec.snapshot()
    bulk = [r for r in reqs if r["path"].endswith("bulk_update.json") and r["mode"] == "ok"][0]
    spec = WIRE["bulk_update_json"]
    assert bulk["path"] == spec["path"].format(channel_id=987654)
    assert bulk["headers"]["content-type"] == spec["content_type"]
    body = json.loads(bulk["body"])
    assert set(body) == set(spec["required"]) and body["write_api_key"] == KEY
    # while the channel failed, every slot's entry joined the backlog (a backlog goes out as
    # a bulk update, so failing slots after the first are failed bulk attempts)
    failed = [r for r in reqs if r["mode"] in ("zero", "error")]
    assert [r["path"] for r in failed][0] == "/update"
    assert all(r["path"].endswith("bulk_update.json") for r in failed[1:])
    assert len(body["updates"]) == len(failed) + 1 <= spec["max_updates_free"]
    stamps = [u["created_at"] for u in body["updates"]]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for u in body["updates"]:
        assert set(u) <= set(spec["update_optional"]) | {"created_at"}
        assert u["field7"] == 0 and u["status"] == "Available"
    # after the backlog, plain updates again
    wait_until(lambda: rec.snapshot()[-1]["path"] == "/update", timeout=30)
    summary = {}

    def counted():
        mark = board.console.mark()
        board.control("console", line="import json; print('ts ' + json.dumps(app.thingspeak.summary()))")
        summary.update(json.loads(board.wait_for(r"^ts (\{.*\})$", start=mark).group(1)))
        return summary["backlog"] == 0
    wait_until(counted, timeout=20, interval=0.5, what="backlog emptied")
    assert summary["rejected"] == 1
    assert summary["http_errors"] == sum(r["mode"] == "error" for r in failed)
    assert summary["bulk_updates"] == 1 and summary["dropped"] == 0


@pytest.mark.dual_runtime
def test_updates_can_go_to_the_channel_feed_over_mqtt(board_factory, broker):
    cfg = config("http://127.0.0.1:9", interval_s=2, min_interval_s=2,
                 mqtt={"url": f"mqtt://127.0.0.1:{broker.port}", "client_id": "PICO-0099-ts",
                       "user": "PICO-0099-ts", "password": "mqtt-key"})
    sub = Subscriber(broker.port, ["channels/987654/publish"])
    try:
        boot(board_factory, cfg, world=WORLD)
        got = sub.wait(lambda m: True, timeout=30, what="a channel feed publish")
        form = parse_qs(got[0][1].decode(), strict_parsing=True)
        assert "api_key" not in form and form["status"] == ["Available"]
        assert form["field7"] == ["0"] and float(form["field3"][0]) == pytest.approx(230, abs=3)
    finally:
        sub.stop()


@pytest.mark.dual_runtime
def test_https_thingspeak_checks_the_certificate_against_the_ca_on_flash_and_refuses_without(
        board_factory, tmp_path):
    """ThingSpeak's REST API is HTTPS: with `thingspeak.ca_file` the board posts with the
    server certificate checked; without a CA it posts nothing and says why (not plaintext,
    not unchecked) unless `thingspeak.insecure` is true."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware_ocpp"))
    from tlscerts import make_server_cert

    cert = make_server_cert(tmp_path / "pki", "thingspeak")
    rec = ThingSpeakRecorder(tls=cert.server_context())
    try:
        board = boot(board_factory, config(rec.url, interval_s=2, min_interval_s=2, ca_file="ts.der"),
                     world=WORLD, flash=tmp_path / "checked", files={"ts.der": cert.ca_der})
        wait_until(lambda: len(rec.snapshot()) >= 1, timeout=30, what="an update over HTTPS")
        assert check_update(rec.snapshot()[0])["api_key"] == KEY
        board.stop()
        seen = len(rec.snapshot())
        refused = boot(board_factory, config(rec.url, interval_s=2, min_interval_s=2),
                       world=WORLD, flash=tmp_path / "no-ca")
        summary = {}

        def failed_for_want_of_a_ca():
            mark = refused.console.mark()
            refused.control("console", line="import json; print('ts ' + "
                            "json.dumps(app.thingspeak.summary()))")
            summary.update(json.loads(refused.wait_for(r"^ts (\{.*\})$", start=mark).group(1)))
            return summary["net_errors"] >= 1
        wait_until(failed_for_want_of_a_ca, timeout=30, interval=0.5, what="a refused post")
        assert "CA" in summary["last_error"], summary
        assert len(rec.snapshot()) == seen  # nothing reached the server
    finally:
        rec.stop()
