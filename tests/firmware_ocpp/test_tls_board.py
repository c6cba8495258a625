"""A whole board with every OCPP-side uplink on TLS, on the MicroPython build that is the
board's (32-bit, mbedTLS configured as on a Pico W, its buffers on the MicroPython heap)
at a Pico W's heap: security profile 2 (wss:// with Basic auth, the server certificate
checked against a CA on flash), a charging session, then a firmware update downloaded over
HTTPS, against the independent central system (the `ocpp` package) and a file server, both
with an ECDSA P-256 certificate signed by a CA made by the test.

A Pico W's heap holds one TLS session next to the running board, not two: the HTTPS
download failed with ENOMEM while the wss:// session was up. So the firmware keeps one TLS
session at a time (ocpp_link.hold_link): the OCPP link goes down for the download and comes
back after it. The same scenario with a ws:// link (only the download on TLS) is the
baseline. The board's own reports (free heap after a collection, every second) give the
heap figure of each phase; they are printed and recorded in the heap report.

Every uplink on TLS at once (the last test: wss, mqtts telemetry, ThingSpeak over https,
the HTTPS update) runs in turns through the board's TLS room (firmware/lib/tls_room.py;
docs/firmware.md, "Heap with every uplink on TLS")."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from csms import CentralSystem
from fwkit import FileServer, make_bundle
from harness import sensor_reports
from ocpp.v16 import call
from test_firmware_update import (
    CP,
    DONE,
    KEY,
    WORLD,
    board_config,
    boot_versions,
    fw_statuses,
    update,
)
from tlscerts import make_server_cert

from tools.board import PICO_W_HEAP_BYTES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware_station"))
from stationkit import Broker, Subscriber, ThingSpeakRecorder  # noqa: E402

MIN_FREE_BYTES = 8 * 1024  # the margin the board keeps with every uplink on TLS at once


def min_free(board, first: int, last: int | None = None) -> int:
    """Lowest free heap the board reported in reports [first:last]."""
    frees = [r["heap"] for r in sensor_reports(board.console.text)[first:last] if "heap" in r]
    assert frees, "no heap report in that phase"
    return min(frees)


def report_count(board) -> int:
    return len(sensor_reports(board.console.text))


@pytest.mark.parametrize("runtime", ["micropython-picow"])
@pytest.mark.parametrize("link", ["wss", "ws"])
def test_a_board_charges_and_updates_its_firmware_over_https_within_a_pico_w_heap(
        link, runtime_name, board_factory, tmp_path, record_heap):
    cert = make_server_cert(tmp_path / "pki", "server")
    cs = CentralSystem(password=KEY, heartbeat_s=5).start(
        ssl_ctx=cert.server_context() if link == "wss" else None)
    files = FileServer(tmp_path / "www", tls=cert.server_context())
    board = None
    try:
        assert cs.url.startswith(link + "://") and files.url.startswith("https://")
        config = board_config(cs.url)
        config["ocpp"]["ca_file"] = "ca.der"
        board = board_factory(config, world=WORLD, start=False)
        board.flash.mkdir(parents=True, exist_ok=True)
        (board.flash / "ca.der").write_bytes(cert.ca_der)
        board.start()
        cs.wait(lambda: cs.booted(CP), 90, "BootNotification over wss")
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available")

        # idle
        start = report_count(board)
        board.wait_for(r"^sensors ", timeout=10, start=len(board.console.text))
        cs.wait(lambda: report_count(board) >= start + 5, 30, "five idle reports")
        idle = min_free(board, start)

        # a charging session
        start = report_count(board)
        board.control("plug", demand_a=16)
        cs.call(CP, call.RemoteStartTransaction(id_tag="CARD-TLS", connector_id=1))
        cs.wait(lambda: cs.transactions, 60, "StartTransaction")
        txid = max(cs.transactions)
        cs.wait(lambda: len(cs.transactions[txid]["values"]) >= 8, 60, "meter values while charging")
        board.control("unplug")
        cs.wait(lambda: cs.transactions[txid]["meter_stop"] is not None, 60, "StopTransaction")
        charging = min_free(board, start)

        # a firmware update downloaded over HTTPS (a wss link is dropped meanwhile)
        start = report_count(board)
        make_bundle(runtime_name, files.root / "v2", "2.0.0")
        update(cs, files.url + "/v2/manifest.json")
        cs.wait(lambda: DONE & set(fw_statuses(cs)), 120, "the update to finish")
        download_reports = [r for r in sensor_reports(board.console.text)[start:] if "heap" in r]
        logged = re.findall(r"downloaded \(\d+ files\), heap free (-?\d+)", board.console.text)
        cs.wait(lambda: len(boot_versions(cs)) == 2, 60, "the new firmware's BootNotification")
        assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing", "Installed"]
        assert boot_versions(cs)[-1] == "2.0.0"
        downloading = min([r["heap"] for r in download_reports] + [int(x) for x in logged])

        assert "MemoryError" not in board.console.text and "OSError(12" not in board.console.text
        assert "NOT checked" not in board.console.text
        held = "link down during an https transfer (one TLS session at a time)"
        assert (held in board.console.text) == (link == "wss")
        # ev.status()'s uplinks line (also printed at boot as "ready: ...")
        assert ("ocpp offline (wss, certificate checked)" in board.console.text) == (link == "wss")
        print("\nheap on the 32-bit build at %d bytes, OCPP over %s (free after a collection, "
              "lowest):" % (PICO_W_HEAP_BYTES, link))
        for name, free in (("idle", idle), ("charging session", charging),
                           ("firmware update, https download", downloading)):
            print("  %-40s free %6d  used %6d" % (name, free, PICO_W_HEAP_BYTES - free))
        record_heap(min(idle, charging, downloading))
    finally:
        if board is not None:
            board.stop()
            lines = [ln for ln in board.console.text.splitlines() if not ln.startswith("sensors ")]
            print("--- console without sensor reports ---\n" + "\n".join(lines[-150:]))
        files.close()
        cs.stop()


def largest_free_block(board) -> int:
    """The largest free block of the board's heap now, in bytes (micropython.mem_info's
    "max free sz", in 16-byte blocks, typed on the board's console)."""
    mark = board.console.mark()
    board.control("console", line="import micropython; micropython.mem_info()")
    found = board.wait_for(r"max free sz: (\d+)", timeout=20, start=mark)
    return int(found.group(1)) * 16


def all_tls_config(cs_url, broker_port, thingspeak_url):
    config = board_config(cs_url)
    config["ocpp"]["ca_file"] = "ca.der"
    config["mqtt"] = {"url": "mqtts://127.0.0.1:%d" % broker_port, "ca_file": "ca.der",
                      "max_backoff_s": 2, "timeout_s": 5, "tls_batch": 5}
    config["thingspeak"] = {"url": thingspeak_url, "channel": 4242, "write_key": "TSWRITEKEY000001",
                            "ca_file": "ca.der", "tls_batch": 2}
    config["intervals"].update({"telemetry_s": 2})
    return config


@pytest.mark.parametrize("runtime", ["micropython-picow"])
def test_a_board_with_every_uplink_on_tls_charges_publishes_and_updates_within_a_pico_w_heap(
        runtime_name, board_factory, tmp_path, record_heap):
    """wss (profile 2) + mqtts telemetry (batches) + ThingSpeak over https + an HTTPS
    firmware update, all certificates checked. One TLS session at a time in the board's TLS
    room (tls_room.py: holes of heap the size of mbedTLS's buffers kept from boot): the
    wss link steps aside for each mqtts batch, ThingSpeak post and the download."""
    cert = make_server_cert(tmp_path / "pki", "server")
    cs = CentralSystem(password=KEY, heartbeat_s=5).start(ssl_ctx=cert.server_context())
    files = FileServer(tmp_path / "www", tls=cert.server_context())
    broker = Broker(tmp_path, tls=(cert.cert_pem, cert.key_pem), users={CP: KEY}).start()
    sub = Subscriber(broker.sub_port, ["picocharge/%s/telemetry" % CP])
    thingspeak = ThingSpeakRecorder(tls=cert.server_context())
    board = None
    try:
        assert cs.url.startswith("wss://") and thingspeak.url.startswith("https://")
        board = board_factory(all_tls_config(cs.url, broker.port, thingspeak.url),
                              world=WORLD, start=False)
        board.flash.mkdir(parents=True, exist_ok=True)
        (board.flash / "ca.der").write_bytes(cert.ca_der)
        board.start()
        cs.wait(lambda: cs.booted(CP), 90, "BootNotification over wss")
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available")
        board.wait_for(r"^mqtt: connected to 127\.0\.0\.1:\d+ \(TLS, certificate checked\)$",
                       timeout=60)

        # idle: wss up, mqtts batches and ThingSpeak posts in the TLS room
        start = report_count(board)
        cs.wait(lambda: report_count(board) >= start + 8, 30, "eight idle reports")
        idle = min_free(board, start)
        blocks = [largest_free_block(board)]

        # a charging session
        start = report_count(board)
        sub_before = len(sub.messages)
        ts_before = len(thingspeak.snapshot())
        board.control("plug", demand_a=16)
        cs.call(CP, call.RemoteStartTransaction(id_tag="CARD-TLS", connector_id=1))
        cs.wait(lambda: cs.transactions, 60, "StartTransaction")
        txid = max(cs.transactions)
        cs.wait(lambda: len(cs.transactions[txid]["values"]) >= 12, 60, "meter values while charging")
        sub.wait(lambda m: len(sub.messages) >= sub_before + 5, what="telemetry while charging")
        cs.wait(lambda: len(thingspeak.snapshot()) > ts_before, 60, "ThingSpeak while charging")
        board.control("unplug")
        cs.wait(lambda: cs.transactions[txid]["meter_stop"] is not None, 60, "StopTransaction")
        charging = min_free(board, start)
        blocks.append(largest_free_block(board))
        mark = board.console.mark()
        board.control("console", line="import json; print('room ' + json.dumps(app.tls_room.summary()))")
        room = json.loads(board.wait_for(r"^room (\{.*\})$", start=mark).group(1))
        # every TLS session so far (wss connects, mqtts batches) went through the room, and
        # its placeholders were taken back after each
        assert room["sessions"] >= 5 and room["misses"] == 0 and room["held"] is False, room

        # a firmware update downloaded over HTTPS (the room is the download's; wss down)
        start = report_count(board)
        mqtt_before = len(sub.messages)
        make_bundle(runtime_name, files.root / "v2", "2.0.0")
        update(cs, files.url + "/v2/manifest.json")
        cs.wait(lambda: DONE & set(fw_statuses(cs)), 120, "the update to finish")
        download_reports = [r for r in sensor_reports(board.console.text)[start:] if "heap" in r]
        logged = re.findall(r"downloaded \(\d+ files\), heap free (-?\d+)", board.console.text)
        assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing", "Installed"]
        downloading = min([r["heap"] for r in download_reports] + [int(x) for x in logged])
        cs.wait(lambda: len(boot_versions(cs)) == 2, 60, "the new firmware's BootNotification")
        sub.wait(lambda m: len(sub.messages) > mqtt_before, what="telemetry over mqtts after the update")
        assert boot_versions(cs)[-1] == "2.0.0"

        text = board.console.text
        assert "MemoryError" not in text and "OSError(12" not in text and "ENOMEM" not in text
        assert "NOT checked" not in text
        # the room's placeholder was taken again after every transient session
        assert "-byte hole for the TLS room" not in text
        # one TLS session at a time: the wss link stepped aside for each mqtts batch and
        # for the download; telemetry went out in several mqtts sessions
        assert "ocpp: link down during an mqtts telemetry batch" in text
        assert "ocpp: link down during a ThingSpeak post" in text
        assert "ocpp: link down during an https transfer" in text
        assert len(re.findall(r"^mqtt: connected to .*\(TLS, certificate checked\)$", text, re.M)) >= 3
        # ThingSpeak over https in batches: bulk_update.json with two entries each
        bulk = [r for r in thingspeak.snapshot() if r["path"].endswith("/bulk_update.json")]
        assert bulk and all(len(json.loads(r["body"])["updates"]) >= 2 for r in bulk), bulk
        print("\nheap on the 32-bit build at %d bytes, wss + mqtts + https ThingSpeak + https "
              "download (free after a collection, lowest):" % PICO_W_HEAP_BYTES)
        for name, free in (("idle", idle), ("charging session", charging),
                           ("firmware update, https download", downloading)):
            print("  %-40s free %6d  used %6d" % (name, free, PICO_W_HEAP_BYTES - free))
        print("  largest free block (idle, after charging; wss up): %s" % blocks)
        print("  TLS room after charging: %s" % room)
        record_heap(min(idle, charging, downloading))
        for name, free in (("idle", idle), ("charging", charging), ("download", downloading)):
            assert free >= MIN_FREE_BYTES, "%s: %d bytes free, margin is %d" % (
                name, free, MIN_FREE_BYTES)
    finally:
        if board is not None:
            board.stop()
            lines = [ln for ln in board.console.text.splitlines() if not ln.startswith("sensors ")]
            print("--- console without sensor reports ---\n" + "\n".join(lines[-150:]))
        thingspeak.stop()
        sub.stop()
        broker.stop()
        files.close()
        cs.stop()
