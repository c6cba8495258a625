"""Heap of a complete board during a charging session on the MicroPython Unix port.

    python -m tools.bench.board_heap [--tls]

Boots the real firmware (app, station, OCPP charge point, MQTT telemetry; installed as
.mpy as on a board) at a Pico W's heap against the real central system (embedded broker),
plugs in an EV, starts a session from the console, charges, unplugs, and reads the
board's own reports: the lowest free heap after a collection, sampled every 2 s. Returns
{"heap_kib", "peak_used_kib", "min_free_kib", "completed"}. With `--tls` the OCPP link is
security profile 2 (wss://, the central system's ECDSA P-256 certificate checked against
a CA on the board's flash; certificates made for the run).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _wait(probe, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(what)


def run(heap: str | None = None, tls: bool = False) -> dict:
    from tools.board import DEFAULT_HEAP

    heap = heap or DEFAULT_HEAP
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "tests" / "firmware_ocpp"))
    from harness import BoardHarness
    from tlscerts import make_server_cert

    from server.app import Application
    from server.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {
            "server.data_dir": str(Path(tmp) / "var"), "ocpp.host": "127.0.0.1", "ocpp.port": 0,
            "http.host": "127.0.0.1", "http.port": 0, "mqtt.embedded_port": 0,
            "ocpp.auto_register": True, "server.log_level": "WARNING"}
        if tls:
            cert = make_server_cert(Path(tmp) / "pki", "central")
            overrides.update({"ocpp.tls_cert": str(cert.cert_pem), "ocpp.tls_key": str(cert.key_pem)})
        config = load_config(None, environ={}, overrides=overrides)
        app = Application(config).start()
        board = None
        completed = False
        try:
            app.store.save_id_tag({"id_tag": "CARD-HEAP", "status": "Accepted", "created_at": time.time()})
            ocpp = {"url": "%s://127.0.0.1:%d/ocpp" % ("wss" if tls else "ws", app.ports["ocpp"]),
                    "password": "bench-heap-key-0001"}  # stored by auto_register
            flash = Path(tmp) / "flash"
            if tls:
                ocpp["ca_file"] = "ca.der"
                flash.mkdir()
                (flash / "ca.der").write_bytes(cert.ca_der)
            board = BoardHarness("micropython", flash, {
                "cp_id": "PICO-HEAP", "wifi": {"ssid": "bench", "password": "bench"},
                "ocpp": ocpp, "mqtt": {"url": "mqtt://127.0.0.1:%d" % app.ports["mqtt"]},
                "intervals": {"telemetry_s": 2, "report_s": 2}}, heap=heap).start()
            try:
                board.wait_for(r"BootNotification Accepted", timeout=60)
                board.control("plug", demand_a=16)
                time.sleep(2)
                board.control("console", line="import ev")
                board.control("console", line='ev.start("CARD-HEAP")')
                _wait(lambda: board.world()["relay_closed"], 60, "charging")
                time.sleep(10)
                board.control("unplug")
                board.wait_for(r"stopped \(EVDisconnected\)", timeout=60)
                time.sleep(4)
                completed = True
            except (TimeoutError, AssertionError) as exc:
                print(f"[board-heap] the session did not complete: {exc}", flush=True)
        finally:
            text = board.console.text if board else ""
            if board:
                board.stop()
            app.stop()
    frees = [json.loads(line[8:]).get("heap") for line in text.splitlines() if line.startswith("sensors {")]
    frees = [f for f in frees if isinstance(f, int)]
    total = int(heap[:-1]) * 1024 if heap.endswith("K") else int(heap)
    result = {"heap_kib": round(total / 1024, 1), "completed": completed, "tls": tls,
              "memory_errors": text.count("MemoryError"),
              "min_free_kib": round(min(frees) / 1024, 1) if frees else None,
              "peak_used_kib": round((total - min(frees)) / 1024, 1) if frees else None}
    print("[board-heap] full board (app, station, OCPP%s, MQTT) on MicroPython at %s: %s"
          % (" over wss" if tls else "", heap, json.dumps(result)), flush=True)
    return result


if __name__ == "__main__":
    run(tls="--tls" in sys.argv[1:])
