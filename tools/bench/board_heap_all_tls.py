"""`python -m tools.bench.board_heap --all-tls`: the heap of a complete board with every
uplink on TLS at once, at a Pico W's heap, against the real central system (see
board_heap.py's docstring for the set-up). Phases and their lowest free heap (the board's
own `sensors` reports, free after a collection, every 2 s; and the download's own log):

One TLS session at a time in the board's TLS room (firmware/lib/tls_room.py): the wss
link steps aside for each mqtts batch and for the download; `tls_room_misses` counts the
times the room's placeholder found no hole after a session (0 when the design holds).

- idle: booted, wss up, the first mqtts telemetry batch sent;
- charging: plug, start from the console, charge, unplug, stopped;
- download: UpdateFirmware for a signed bundle over HTTPS until the download is logged.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CP = "PICO-HEAP"
KEY = "bench-heap-key-0001"  # stored by auto_register


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TLSBroker:
    """Mosquitto on 127.0.0.1: a TLS listener (anonymous: a heap measurement) and a plain
    one for checking that telemetry arrives; started and stopped by PID."""

    def __init__(self, directory: Path, cert_pem: Path, key_pem: Path):
        self.port, self.plain_port = _free_port(), _free_port()
        conf = directory / "mosquitto.conf"
        conf.write_text("\n".join([
            "per_listener_settings true", "persistence false", "user " + os.environ.get("USER", "root"),
            "listener %d 127.0.0.1" % self.port, "certfile %s" % cert_pem, "keyfile %s" % key_pem,
            "allow_anonymous true", "listener %d 127.0.0.1" % self.plain_port,
            "allow_anonymous true"]) + "\n")
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.plain_port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            self.proc.wait(10)


def _api(base: str, token: str, method: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + "/api/v1" + path, data=json.dumps(body).encode(),
                                 method=method, headers={"Authorization": "Bearer " + token,
                                                         "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _lowest(text: str, first: int, last: int | None = None) -> int | None:
    frees = [json.loads(m).get("heap") for m in re.findall(r"^sensors (\{.*\})$", text, re.M)[first:last]]
    frees = [f for f in frees if isinstance(f, int)]
    return min(frees) if frees else None


def _reports(text: str) -> int:
    return len(re.findall(r"^sensors \{", text, re.M))


def run_all_tls(heap: str | None = None) -> dict:
    from tools.board import DEFAULT_HEAP

    heap = heap or DEFAULT_HEAP
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "tests" / "firmware_ocpp"))
    from fwkit import MAKER_PUB, FileServer, make_bundle
    from harness import BoardHarness
    from tlscerts import make_server_cert

    from server.app import Application
    from server.config import load_config

    phases: dict[str, int | None] = {"idle": None, "charging": None, "download": None}
    completed = False
    text = ""
    thingspeak = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cert = make_server_cert(tmp / "pki", "central")
        token = secrets.token_urlsafe(32)
        config = load_config(None, environ={}, overrides={
            "server.data_dir": str(tmp / "var"), "ocpp.host": "127.0.0.1", "ocpp.port": 0,
            "http.host": "127.0.0.1", "http.port": 0, "mqtt.embedded_port": 0,
            "ocpp.auto_register": True, "server.log_level": "WARNING",
            "ocpp.tls_cert": str(cert.cert_pem), "ocpp.tls_key": str(cert.key_pem),
            "auth.admin_token": token, "thingspeak.rate_limit": False})
        app = Application(config).start()
        broker = files = board = None
        try:
            broker = TLSBroker(tmp, cert.cert_pem, cert.key_pem)
            files = FileServer(tmp / "www", tls=cert.server_context())
            http = "http://127.0.0.1:%d" % app.ports["http"]
            channel = _api(http, token, "POST", "/thingspeak/channels", {"name": "heap bench"})
            app.store.save_id_tag({"id_tag": "CARD-HEAP", "status": "Accepted", "created_at": time.time()})
            flash = tmp / "flash"
            flash.mkdir()
            (flash / "ca.der").write_bytes(cert.ca_der)
            board = BoardHarness("micropython", flash, {
                "cp_id": CP, "wifi": {"ssid": "bench", "password": "bench"},
                "ocpp": {"url": "wss://127.0.0.1:%d/ocpp" % app.ports["ocpp"], "password": KEY,
                         "ca_file": "ca.der"},
                "mqtt": {"url": "mqtts://127.0.0.1:%d" % broker.port, "ca_file": "ca.der",
                         "tls_batch": 5},
                "thingspeak": {"url": http, "channel": channel["id"],
                               "write_key": channel["write_key"]},
                "firmware": {"keys": [MAKER_PUB]},
                "intervals": {"telemetry_s": 2, "report_s": 2}}, heap=heap).start()
            try:
                board.wait_for(r"BootNotification Accepted", timeout=60)
                start = _reports(board.console.text)
                board.wait_for(r"^mqtt: connected to .*\(TLS, certificate checked\)", timeout=60)
                board.wait_for(r"^sensors ", timeout=10, start=len(board.console.text))
                phases["idle"] = _lowest(board.console.text, start)

                start = _reports(board.console.text)
                board.control("plug", demand_a=16)
                time.sleep(2)
                board.control("console", line="import ev")
                board.control("console", line='ev.start("CARD-HEAP")')
                deadline = time.monotonic() + 60
                while not board.world()["relay_closed"]:
                    if time.monotonic() > deadline:
                        raise TimeoutError("charging")
                    time.sleep(0.25)
                time.sleep(12)  # a telemetry batch while charging
                board.control("unplug")
                board.wait_for(r"stopped \(EVDisconnected\)", timeout=60)
                phases["charging"] = _lowest(board.console.text, start)
                mark = board.console.mark()
                board.control("console", line="import json; print('ts ' + json.dumps(app.thingspeak.summary()))")
                thingspeak = json.loads(board.wait_for(r"^ts (.*)$", start=mark).group(1))

                start = _reports(board.console.text)
                make_bundle("micropython", files.root / "v2", "2.0.0")
                _api(http, token, "POST", "/chargepoints/%s/UpdateFirmware" % CP, {
                    "location": files.url + "/v2/manifest.json",
                    "retrieveDate": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
                logged = board.wait_for(r"downloaded \(\d+ files\), heap free (-?\d+)", timeout=180)
                end = _reports(board.console.text)
                lowest = _lowest(board.console.text, start, end)
                phases["download"] = min(x for x in (lowest, int(logged.group(1))) if x is not None)
                board.wait_for(r"installed, rebooting", timeout=120)
                completed = True
            except (TimeoutError, AssertionError) as exc:
                print(f"[board-heap] the all-TLS run did not complete: {exc}", flush=True)
                lines = [ln for ln in board.console.text.splitlines() if not ln.startswith("sensors ")]
                print("\n".join(lines[-60:]), flush=True)
        finally:
            text = board.console.text if board else ""
            if board:
                board.stop()
            if files:
                files.close()
            if broker:
                broker.stop()
            app.stop()
    total = int(heap[:-1]) * 1024 if heap.endswith("K") else int(heap)
    result = {"heap_kib": round(total / 1024, 1), "completed": completed, "all_tls": True,
              "memory_errors": text.count("MemoryError") + text.count("OSError(12"),
              "mqtts_batches_sent": len(re.findall(r"^mqtt: connected to .*TLS", text, re.M)),
              "wss_steps_aside_for_mqtts": text.count("link down during an mqtts telemetry batch"),
              "tls_room_misses": text.count("-byte hole for the TLS room"),
              "thingspeak_updates_before_update": thingspeak.get("updates"),
              "min_free_kib": {k: round(v / 1024, 1) if v is not None else None for k, v in phases.items()}}
    print("[board-heap] full board, every uplink on TLS (wss, mqtts batches in the TLS room, "
          "ThingSpeak on http, HTTPS update) on MicroPython at %s: %s" % (heap, json.dumps(result)), flush=True)
    return result
