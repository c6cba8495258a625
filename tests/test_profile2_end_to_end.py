"""OCPP security profile 2 against the real central system: the server with a TLS
certificate (`ocpp.tls_cert` / `ocpp.tls_key`, ECDSA P-256 signed by a CA made here) and a
firmware board (MicroPython: the 32-bit mbedTLS build at a Pico W's heap) with that CA on
its flash (`ocpp.ca_file`) registers over wss:// with Basic auth, charges a car and stops
when it leaves; MQTT telemetry runs beside it."""

import re
import sys
import time
from pathlib import Path

import pytest
from harness import sensor_reports

from server.app import Application
from server.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parent / "firmware_ocpp"))
from tlscerts import make_server_cert  # noqa: E402

CP = "PICO-TLS"
KEY = "profile2-key-0123456789"


@pytest.fixture
def central_tls(tmp_path):
    cert = make_server_cert(tmp_path / "pki", "central")
    config = load_config(None, environ={}, overrides={
        "server.data_dir": str(tmp_path / "var"),
        "ocpp.host": "127.0.0.1", "ocpp.port": 0, "http.host": "127.0.0.1", "http.port": 0,
        "mqtt.embedded_port": 0, "ocpp.auto_register": True, "server.log_level": "WARNING",
        "ocpp.tls_cert": str(cert.cert_pem), "ocpp.tls_key": str(cert.key_pem)})
    app = Application(config).start()
    yield app, cert
    app.stop()


@pytest.mark.dual_runtime
def test_a_board_registers_over_wss_with_its_ca_and_charges_a_car(
        central_tls, board_factory, record_heap, runtime_name):
    app, cert = central_tls
    app.store.save_id_tag({"id_tag": "CARD-TLS", "status": "Accepted", "created_at": time.time()})
    board = board_factory({
        "cp_id": CP, "wifi": {"ssid": "workshop", "password": "secret"},
        "ocpp": {"url": "wss://127.0.0.1:%d/ocpp" % app.ports["ocpp"], "password": KEY,
                 "ca_file": "ca.der"},
        "mqtt": {"url": "mqtt://127.0.0.1:%d" % app.ports["mqtt"]},
        "intervals": {"telemetry_s": 2, "report_s": 2},
    }, world={"ap_ssid": "workshop", "ap_password": "secret"}, start=False)
    board.flash.mkdir(parents=True, exist_ok=True)
    (board.flash / "ca.der").write_bytes(cert.ca_der)
    board.start()
    board.wait_for(r"^ocpp: BootNotification Accepted", timeout=90)
    assert "(wss, certificate checked)" in board.console.text
    board.control("plug", demand_a=16)
    board.control("console", line="import ev")
    board.control("console", line='ev.start("CARD-TLS")')
    board.wait_for(r"^ocpp: transaction #\d+ started for CARD-TLS", timeout=60)
    board.wait_for(r"^mqtt: connected", timeout=30)
    mark = len(board.console.text)
    board.wait_for(r"^sensors .*\"relay\": true", timeout=30, start=mark)
    board.control("unplug")
    stopped = board.wait_for(r"^ocpp: transaction #(\d+) stopped \(EVDisconnected\)", timeout=60)
    assert re.search(r"^ocpp: connect failed", board.console.text, re.M) is None
    assert "MemoryError" not in board.console.text
    if runtime_name == "micropython":
        record_heap(min(r["heap"] for r in sensor_reports(board.console.text) if "heap" in r))
    assert int(stopped.group(1)) > 0
