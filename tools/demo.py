"""`make demo`: the whole system on this machine in one command, with a car charging.

    python -m tools.demo [--runtime cpython|micropython] [--for SECONDS]
                         [--http-port 8080] [--ocpp-port 9000] [--mqtt-port 0]

It starts the central system (data in ``var/demo/``, on 127.0.0.1 only), creates a demo
operator login and an API token, registers a station ``DEMO-1`` with its own key and the
idTags ``DEMO-CARD`` and ``OPERATOR`` (the dashboard's Remote start), boots a firmware
board on the host against it (CPython by default; MicroPython, a Pico W's heap, with
``--runtime micropython``), plugs in a simulated car and starts a session with the card.
Then it prints the dashboard's address, the login and what to watch, and a line of what
the server has stored every few seconds, until Ctrl-C (or ``--for`` seconds), which stops
everything it started: the board, the server and its broker.

A second run reuses ``var/demo/``: the same login, token and station key (kept in
``var/demo/demo.json``, mode 0600), and the history of earlier runs. With
``PICOCHARGE_ADMIN_TOKEN`` set, that is the API token (as with ``make run``), so a script
can follow the demo through the REST API. A busy port is replaced by a free one (the
printed addresses are the ones in use).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "var" / "demo"
STATION = "DEMO-1"
CARD = "DEMO-CARD"
LOGIN = "demo"
DEMO_RATE_S = 5  # telemetry, ThingSpeak-style reports and MeterValues: every 5 s


class DemoError(RuntimeError):
    pass


def free_or_any(port: int) -> int:
    """`port` if nothing listens there on 127.0.0.1, else 0 (any free port)."""
    if port == 0:
        return 0
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return port
        except OSError:
            return 0


def load_state(directory: Path) -> dict:
    """The demo's login password, API token and station key: made on the first run, kept
    for the next (a private file: they are credentials, even if only a demo's)."""
    path = directory / "demo.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {}
    changed = False
    for name, make in (("password", lambda: secrets.token_urlsafe(12)),
                       ("admin_token", lambda: secrets.token_urlsafe(32)),
                       ("station_key", lambda: secrets.token_urlsafe(24)[:32])):
        if not isinstance(state.get(name), str) or not state[name]:
            state[name] = make()
            changed = True
    if changed:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle)
        os.replace(tmp, path)
    return state


class Api:
    """The server's REST API with the demo's token."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token

    def call(self, method: str, path: str, body=None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + "/api/v1" + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw) if raw else None
            except ValueError:
                return error.code, raw.decode(errors="replace")

    def ensure(self, method: str, path: str, body, what: str) -> None:
        """Create something the demo needs; already there (409) is fine."""
        status, answer = self.call(method, path, body)
        if status not in (200, 201, 409):
            raise DemoError(f"could not create {what}: HTTP {status} {answer}")


def wait_for(probe, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.3)
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")


def board_config(ports: dict, key: str) -> dict:
    return {
        "cp_id": STATION,
        "wifi": {"ssid": "demo", "password": "demo-wifi"},
        "ocpp": {"url": "ws://127.0.0.1:%d/ocpp" % ports["ocpp"], "password": key,
                 "keys": {"MeterValueSampleInterval": DEMO_RATE_S}},
        "mqtt": {"url": "mqtt://%s:%s@127.0.0.1:%d" % (STATION, key, ports["mqtt"])},
        "intervals": {"telemetry_s": DEMO_RATE_S, "report_s": DEMO_RATE_S},
    }


class BoardLog:
    """The board's console goes to var/demo/board.log (it is chatty); the demo prints a
    summary instead."""

    def __init__(self, path: Path) -> None:
        self.handle = open(path, "a", buffering=1, encoding="utf-8")

    def write(self, text: str) -> None:
        self.handle.write(text)

    def flush(self) -> None:
        self.handle.flush()


def connector_status(api: Api) -> str | None:
    status, connectors = api.call("GET", f"/chargepoints/{STATION}/connectors")
    if status != 200:
        return None
    for connector in connectors or []:
        if connector.get("connector_id") == 1:
            return connector.get("status")
    return None


def open_transaction(api: Api) -> dict | None:
    status, rows = api.call("GET", f"/chargepoints/{STATION}/transactions")
    if status != 200:
        return None
    running = [row for row in rows or [] if not row.get("stop")]
    return running[0] if running else None


def progress(api: Api, tx_id: int) -> str:
    _, tx = api.call("GET", f"/transactions/{tx_id}")
    _, telemetry = api.call("GET", f"/chargepoints/{STATION}/telemetry")
    tx = tx if isinstance(tx, dict) else {}
    energy = [int(float(row["value"])) for row in tx.get("meter_values", [])
              if row.get("measurand") == "Energy.Active.Import.Register"]
    power = [float(row["value"]) for row in tx.get("meter_values", [])
             if row.get("measurand") == "Power.Active.Import"]
    delivered = (energy[-1] - tx.get("meter_start", energy[-1])) if energy else 0
    return (f"transaction {tx_id}: {delivered} Wh delivered, "
            f"power {power[-1]:.0f} W, " if power else f"transaction {tx_id}: {delivered} Wh, ") + \
        f"{len(energy)} meter readings, {len(telemetry or [])} telemetry reports stored"


def start_server(args, directory: Path, token: str):
    """The central system on the asked ports, or on free ones where they are taken (also
    when another program takes one between the check and the bind)."""
    from server.app import Application
    from server.config import load_config

    ports = {"ocpp": args.ocpp_port, "http": args.http_port, "mqtt": args.mqtt_port}
    for attempt in range(2):
        if attempt:
            ports = dict.fromkeys(ports, 0)
        config = load_config(None, environ=os.environ, overrides={
            "server.data_dir": str(directory),
            "ocpp.host": "127.0.0.1", "ocpp.port": free_or_any(ports["ocpp"]),
            "http.host": "127.0.0.1", "http.port": free_or_any(ports["http"]),
            "mqtt.embedded_host": "127.0.0.1", "mqtt.embedded_port": free_or_any(ports["mqtt"]),
            "auth.admin_token": token,
        })
        app = Application(config)
        try:
            return app.start()
        except OSError as error:
            app.stop()
            if error.errno != errno.EADDRINUSE or attempt:
                raise
    raise AssertionError("unreachable")


def run(args) -> int:
    from tools.board import Board, check_micropython, install_firmware

    if args.runtime == "micropython":
        check_micropython()
    directory = args.data_dir.resolve()
    state = load_state(directory)
    token = os.environ.get("PICOCHARGE_ADMIN_TOKEN") or state["admin_token"]
    board = None
    app = None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        app = start_server(args, directory, token)
        base = f"http://127.0.0.1:{app.ports['http']}"
        api = Api(base, token)
        if app.accounts.user(LOGIN) is None:
            app.accounts.add_user(LOGIN, "admin", state["password"])
        elif app.accounts.verify_password(LOGIN, state["password"]) is None:
            app.accounts.update_user(LOGIN, password=state["password"])
        status, answer = api.call("POST", "/chargepoints",
                                  {"id": STATION, "auth_key": state["station_key"]})
        if status == 409:  # an earlier run's: make sure it has this run's key and may charge
            status, answer = api.call("PATCH", f"/chargepoints/{STATION}",
                                      {"auth_key": state["station_key"],
                                       "registration": "Accepted"})
        if status not in (200, 201):
            raise DemoError(f"could not register {STATION}: HTTP {status} {answer}")
        for tag in (CARD, "OPERATOR"):
            api.ensure("POST", "/idtags", {"id_tag": tag}, f"the idTag {tag}")

        flash = directory / "board"
        flash.mkdir(parents=True, exist_ok=True)
        (flash / "config.json").write_text(json.dumps(board_config(app.ports, state["station_key"])))
        install_firmware(flash, runtime=args.runtime)
        board = Board(args.runtime, flash, seed=1, world={"dht_blocking_ms": 0},
                      console=BoardLog(directory / "board.log"))
        board.power_on()
        print(f"[demo] board {STATION} ({args.runtime}) booting; its console: "
              f"{directory / 'board.log'}", flush=True)
        wait_for(lambda: connector_status(api) == "Available", 90, "the board to be Available")
        board.handle({"cmd": "plug", "demand_a": 16})
        wait_for(lambda: connector_status(api) == "Preparing", 30, "the car to be seen")
        board.handle({"cmd": "console", "line": "import ev"})
        board.handle({"cmd": "console", "line": f'ev.start("{CARD}")'})
        tx = wait_for(lambda: open_transaction(api), 60, "the transaction to start")
        print(f"""
[demo] A car is charging at {STATION}.
  Dashboard:  {base}/   login: {LOGIN}   password: {state['password']}
  REST API:   {base}/api/v1/  with  Authorization: Bearer <the token>  (PICOCHARGE_ADMIN_TOKEN,
              or "admin_token" in {directory / 'demo.json'})
  Watch:      the station's page: power near 3.7 kW (16 A at 230 V), energy counting up,
              telemetry on the charts every {DEMO_RATE_S} s; Remote stop / start from the page.
  Stop:       Ctrl-C stops the board, the server and its broker.
""", flush=True)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(min(10.0, max(0.0, deadline - time.monotonic())) if deadline else 10.0)
            print("[demo] " + progress(api, tx["id"]), flush=True)
    except KeyboardInterrupt:
        pass
    except DemoError as error:
        print(f"[demo] {error}; the board's console is in {directory / 'board.log'}",
              file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            if board is not None:
                board.close()
        finally:
            if app is not None:
                app.stop()
        try:
            print("[demo] stopped the board, the server and its broker", flush=True)
        except OSError:
            pass  # the terminal or pipe is gone
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["cpython", "micropython"], default="cpython",
                        help="the board's Python (micropython: `make micropython` first)")
    parser.add_argument("--for", dest="duration", type=float, default=0,
                        help="stop after this many seconds (0: at Ctrl-C)")
    parser.add_argument("--data-dir", type=Path, default=DEMO_DIR)
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--ocpp-port", type=int, default=9000)
    parser.add_argument("--mqtt-port", type=int, default=0)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
