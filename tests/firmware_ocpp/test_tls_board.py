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
heap figure of each phase; they are printed and recorded in the heap report."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize("runtime", ["micropython-picow"])
def test_mqtts_next_to_wss_is_refused_at_a_pico_w_heap_and_billing_keeps_working(
        runtime_name, board_factory, tmp_path):
    """wss:// and mqtts:// both resident ran out of a Pico W's heap during a charging session
    (MemoryError): at that heap the board starts no mqtts telemetry next to a wss:// charge
    point, says why at boot and in ev.status(), and the OCPP session charges and bills."""
    cert = make_server_cert(tmp_path / "pki", "server")
    cs = CentralSystem(password=KEY, heartbeat_s=5).start(ssl_ctx=cert.server_context())
    board = None
    try:
        config = board_config(cs.url)
        config["ocpp"]["ca_file"] = "ca.der"
        # no broker needed: the telemetry link is never started
        config["mqtt"] = {"url": "mqtts://127.0.0.1:9", "ca_file": "ca.der"}
        board = board_factory(config, world=WORLD, start=False)
        board.flash.mkdir(parents=True, exist_ok=True)
        (board.flash / "ca.der").write_bytes(cert.ca_der)
        board.start()
        said = board.wait_for(r"^mqtt: mqtts:// next to a wss:// charge point does not fit a heap "
                              r"of (\d+) bytes \(262144 needed\): telemetry is off", timeout=30)
        # the heap MicroPython reports (free + allocated) is the -X heapsize less its tables
        assert PICO_W_HEAP_BYTES * 0.95 < int(said.group(1)) <= PICO_W_HEAP_BYTES, said.group(0)
        cs.wait(lambda: cs.last_status(CP) == "Available", 90, "registered over wss")
        mark = board.console.mark()
        board.control("console", line="import ev; ev.status()")
        board.wait_for(r"^uplinks .*ocpp \w+ \(wss, certificate checked\), "
                       r"mqtt off \(mqtts next to wss does not fit this heap\)", start=mark)
        board.control("plug", demand_a=16)
        cs.call(CP, call.RemoteStartTransaction(id_tag="CARD-TLS", connector_id=1))
        cs.wait(lambda: cs.transactions, 60, "StartTransaction")
        txid = max(cs.transactions)
        cs.wait(lambda: len(cs.transactions[txid]["values"]) >= 5, 60, "meter values while charging")
        board.control("unplug")
        cs.wait(lambda: cs.transactions[txid]["meter_stop"] is not None, 60, "StopTransaction")
        tx = cs.transactions[txid]
        assert tx["meter_stop"] > tx["meter_start"], tx
        assert "MemoryError" not in board.console.text and "OSError(12" not in board.console.text
        assert "mqtt: connect" not in board.console.text  # no attempt was made
    finally:
        if board is not None:
            board.stop()
        cs.stop()
