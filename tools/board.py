"""A Pico W board on the host: boot the firmware on the hardware stand-ins.

    python -m tools.board --runtime {cpython,micropython} --flash DIR [--control HOST:PORT]

DIR is the board's flash: the firmware is installed into it the way `make deploy` installs
it on a board (boot.py and main.py as source, lib/ and umqtt.simple compiled to .mpy; only
changed files are copied; CPython gets the lib/ sources, as it cannot load .mpy), and
its `config.json` is the board's config. The child process is the board: MicroPython Unix
port with a Pico W's heap (187.4 KiB), or CPython. Its output is the board's serial console; lines typed
on this process's stdin go to the board's console input.

The simulated world is driven through the control interface: a TCP socket speaking JSON
lines (one request object per line, one reply object per line). See `COMMANDS` and
docs/board-on-host.md. A board reset (machine.reset, the watchdog) or a power cut restarts
the child; the world (EV on the cable, temperature, Wi-Fi) survives it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from server.stop_signals import StopSignals

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "tools" / "stubs"
STUBS_CPYTHON = ROOT / "tools" / "stubs_cpython"
CACHE = Path(os.environ.get("PICOCHARGE_CACHE", ROOT / ".cache"))
MICROPYTHON = CACHE / "bin" / "micropython"
MPLIB = CACHE / "mplib"
FIRMWARE = ROOT / "firmware"
# The MicroPython heap a Pico W gives the firmware (MicroPython 1.25, RPI_PICO_W): the GC
# heap spans the RAM the linker leaves after static data (lwIP pools, cyw43 and BTstack
# state), 191 872 bytes; docs/firmware.md "Heap" says how the figure was found.
PICO_W_HEAP_BYTES = 191_872
DEFAULT_HEAP = str(PICO_W_HEAP_BYTES)

RESET_CAUSE = {"power": 1, "hard": 1, "soft": 5, "watchdog": 3}

# Control commands: name -> (help, how it maps onto world settings)
COMMANDS = {
    "state": "world snapshot + runner info",
    "set": "set one world variable: {key, value}",
    "plug": "plug the EV in (optional demand_a)",
    "unplug": "unplug the EV",
    "ev": "set EV fields: {ready, suspended, ventilation, diode_ok, demand_a, battery_wh}",
    "temperature": "set ambient (DHT11) temperature: {value}",
    "humidity": "set relative humidity: {value}",
    "mcu_temperature": "set RP2040 die temperature: {value}",
    "sensor": "break or heal a sensor: {name: dht|meter, fault: null|timeout|checksum|broken}",
    "wifi": "cut or restore Wi-Fi: {up}",
    "jumper": "set an input pin level (e.g. the safe-mode jumper): {pin, level}",
    "console": "type a line on the board's console: {line}",
    "power_cut": "cut power and restore it (child killed, rebooted)",
    "power_off": "cut power and leave it off",
    "power_on": "restore power",
    "reset": "press the reset button",
}


def check_micropython() -> None:
    """The Unix port exists and was built from what tools/fetch.py pins now (flags, mbedTLS
    and its configuration, the frozen stand-ins in tools/stubs/)."""
    from tools.fetch import build_key

    if not MICROPYTHON.exists():
        raise SystemExit(f"{MICROPYTHON} is missing: run `make micropython` first")
    stamp = MICROPYTHON.with_name("micropython.stamp")
    try:
        built = stamp.read_text()
    except OSError:
        built = None
    if built != build_key():
        raise SystemExit("the MicroPython build is out of date (flags, mbedTLS configuration or "
                         "frozen modules changed since it was built): run `make micropython`")


def read_board_config(flash: Path) -> dict:
    try:
        return json.loads((flash / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def wiring_from_config(config: dict) -> dict:
    pins = config.get("pins") if isinstance(config.get("pins"), dict) else {}
    return {k: v for k, v in pins.items() if isinstance(v, (int, str))}


def compiled(src: Path) -> Path:
    """The architecture-neutral .mpy of a source file, cached by content hash."""
    from tools.deploy import compile_file

    data = src.read_bytes()
    out = CACHE / "mpy" / (hashlib.sha256(data).hexdigest()[:32] + ".mpy")
    if not out.exists():
        tmp = out.with_name(out.name + ".%d.tmp" % os.getpid())
        result = compile_file(src, tmp, arch=None)
        if result.returncode != 0:
            raise SystemExit(f"mpy-cross rejected {src}:\n{result.stderr}")
        os.replace(tmp, out)
    return out


def install_firmware(flash: Path, firmware: Path = FIRMWARE, mplib: Path = MPLIB,
                     runtime: str = "micropython") -> list[str]:
    """Install the firmware into a flash directory as `make deploy` does on a board: the
    modules under lib/ (and umqtt.simple) as compiled .mpy, boot.py and main.py as source;
    only changed files are written. For the CPython runtime, which cannot load .mpy, the
    modules are installed as source."""
    as_mpy = runtime == "micropython"
    pairs = []
    sources = sorted(firmware.rglob("*.py"))
    umqtt = mplib / "umqtt" / "simple.py"
    if umqtt.exists():
        sources.append(umqtt)
    for src in sources:
        rel = Path("lib/umqtt/simple.py") if src == umqtt else src.relative_to(firmware)
        if as_mpy and rel.parts[0] == "lib":
            pairs.append((compiled(src), flash / rel.with_suffix(".mpy"), flash / rel))
        else:
            pairs.append((src, flash / rel, flash / rel.with_suffix(".mpy")))
    copied = []
    for src, dst, other in pairs:
        if other != dst and other.exists():
            other.unlink()  # a stale module of the other kind would shadow this one
        data = src.read_bytes()
        if dst.exists() and dst.read_bytes() == data:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dst)
        copied.append(str(dst.relative_to(flash)))
    return copied


class Board:
    """Owns the child process (the board), the private link and the world settings."""

    def __init__(self, runtime: str, flash: Path, heap: str = DEFAULT_HEAP, seed: int = 0,
                 world: dict | None = None, console=None, stdin_passthrough=False,
                 env: dict | None = None):
        self.runtime = runtime
        self.flash = flash
        self.heap = heap
        self.seed = seed
        self.settings: dict = dict(world or {})
        self.inputs: dict = {}
        self.console = console if console is not None else sys.stdout
        self.stdin_passthrough = stdin_passthrough
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self.resets: list[str] = []
        self.powered = False
        self.lock = threading.RLock()
        self.link_server = socket.create_server(("127.0.0.1", 0))
        self.link_conn: socket.socket | None = None
        self.link_ready = threading.Event()
        self.replies: dict[int, queue.Queue] = {}
        self.next_id = 1
        self.last_snapshot: dict = {}
        self.closing = False
        threading.Thread(target=self._accept_links, daemon=True).start()

    # -- child lifecycle ----------------------------------------------------------------
    def command_line(self) -> list[str]:
        if self.runtime == "micropython":
            check_micropython()
            # the stand-ins and this boot script are frozen into the test build
            return [str(MICROPYTHON), "-X", f"heapsize={self.heap}", "-m", "boardboot"]
        return [sys.executable, "-u", str(STUBS / "boardboot.py")]

    def child_env(self, reset_cause: int) -> dict:
        config = read_board_config(self.flash)
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update({
            "PICOCHARGE_LINK": "127.0.0.1:%d" % self.link_server.getsockname()[1],
            "PICOCHARGE_FLASH": str(self.flash),
            "PICOCHARGE_WORLD": json.dumps(self.settings),
            "PICOCHARGE_INPUTS": json.dumps({str(k): v for k, v in self.inputs.items()}),
            "PICOCHARGE_WIRING": json.dumps(wiring_from_config(config)),
            "PICOCHARGE_NAME": str(config.get("cp_id") or "PICO-0001"),
            "PICOCHARGE_SEED": str(self.seed),
            "PICOCHARGE_RESET": str(reset_cause),
            "PYTHONUNBUFFERED": "1",
        })
        if self.runtime == "micropython":
            env["MICROPYPATH"] = ".frozen" + os.pathsep + str(STUBS)
        else:
            env["PYTHONPATH"] = os.pathsep.join([str(STUBS), str(STUBS_CPYTHON)])
        return env

    def power_on(self, reset_cause: int = RESET_CAUSE["power"]) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                return
            self.link_ready.clear()
            self.proc = subprocess.Popen(
                self.command_line(), env=self.child_env(reset_cause), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(self.flash),
            )
            self.boots += 1
            self.powered = True
            threading.Thread(target=self._pump_console, args=(self.proc,), daemon=True).start()
        self.link_ready.wait(10)

    def power_off(self) -> None:
        with self.lock:
            self.powered = False
            proc = self.proc
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            self.link_conn = None
            self.link_ready.clear()

    def restart(self, reason: str) -> None:
        self.resets.append(reason)
        self.power_off()
        self.power_on(RESET_CAUSE.get(reason, 1))

    def _pump_console(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stdout.readline, b""):
            self.console.write(raw.decode("utf-8", "replace"))
            self.console.flush()

    def type_line(self, line: str) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError("the board is not running")
        proc.stdin.write((line.rstrip("\n") + "\n").encode())
        proc.stdin.flush()

    # -- private link ---------------------------------------------------------------------
    def _accept_links(self) -> None:
        while not self.closing:
            try:
                conn, _ = self.link_server.accept()
            except OSError:
                return
            self.link_conn = conn
            self.link_ready.set()
            threading.Thread(target=self._read_link, args=(conn,), daemon=True).start()

    def _read_link(self, conn: socket.socket) -> None:
        for raw in conn.makefile("rb"):
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if msg.get("event") == "reset":
                threading.Thread(target=self.restart, args=(msg.get("reason", "hard"),),
                                 daemon=True).start()
            elif msg.get("id") in self.replies:
                self.replies[msg["id"]].put(msg)

    def link_call(self, cmd: dict, timeout: float = 5.0) -> object:
        if self.powered:
            self.link_ready.wait(10)  # a board that is booting answers once its link is up
        conn = self.link_conn
        if conn is None or not self.powered:
            raise RuntimeError("the board is powered off")
        with self.lock:
            msg_id = self.next_id
            self.next_id += 1
            box: queue.Queue = queue.Queue()
            self.replies[msg_id] = box
        try:
            conn.sendall((json.dumps(dict(cmd, id=msg_id)) + "\n").encode())
            reply = box.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError("the board did not answer (busy or hung)") from None
        finally:
            self.replies.pop(msg_id, None)
        if not reply.get("ok"):
            raise ValueError(reply.get("error", "rejected"))
        return reply.get("result")

    def set_world(self, key: str, value) -> object:
        if self.powered and self.link_conn is not None:
            result = self.link_call({"cmd": "set", "key": key, "value": value})
        else:
            result = value
        self.settings[key] = result
        return result

    # -- control commands -----------------------------------------------------------------
    def handle(self, req: dict) -> object:
        cmd = req.get("cmd")
        if cmd == "state":
            world = self.link_call({"cmd": "get"}) if self.powered else self.last_snapshot
            if self.powered:
                self.last_snapshot = world
            return {"world": world, "boots": self.boots, "resets": self.resets,
                    "powered": self.powered, "pid": self.proc.pid if self.proc else None,
                    "runtime": self.runtime}
        if cmd == "set":
            return self.set_world(req["key"], req.get("value"))
        if cmd == "plug":
            if "demand_a" in req:
                self.set_world("ev_demand_a", req["demand_a"])
            return self.set_world("ev_plugged", True)
        if cmd == "unplug":
            return self.set_world("ev_plugged", False)
        if cmd == "ev":
            out = {}
            for key in ("ready", "suspended", "ventilation", "diode_ok", "demand_a", "battery_wh"):
                if key in req:
                    out[key] = self.set_world("ev_" + key, req[key])
            return out
        if cmd == "temperature":
            return self.set_world("ambient_c", req["value"])
        if cmd == "humidity":
            return self.set_world("humidity", req["value"])
        if cmd == "mcu_temperature":
            return self.set_world("mcu_c", req["value"])
        if cmd == "sensor":
            name, fault = req.get("name"), req.get("fault")
            if name == "dht":
                return self.set_world("dht_fault", fault)
            if name == "meter":
                return self.set_world("meter_broken", bool(fault))
            raise ValueError("sensor name is 'dht' or 'meter'")
        if cmd == "wifi":
            return self.set_world("wifi_up", bool(req.get("up")))
        if cmd == "jumper":
            self.inputs[req["pin"]] = req["level"]
            if self.powered:
                self.link_call({"cmd": "set_input", "pin": req["pin"], "level": req["level"]})
            return req["level"]
        if cmd == "console":
            self.type_line(req["line"])
            return True
        if cmd == "power_cut":
            self.restart("power")
            return self.boots
        if cmd == "power_off":
            self.power_off()
            return False
        if cmd == "power_on":
            self.power_on()
            return True
        if cmd == "reset":
            self.restart("hard")
            return self.boots
        if cmd == "help":
            return COMMANDS
        raise ValueError(f"unknown command {cmd!r}; try {{\"cmd\": \"help\"}}")

    def serve_control(self, host: str, port: int, accept: bool = True) -> socket.socket:
        server = socket.create_server((host, port))
        if accept:
            self.accept_control(server)
        return server

    def accept_control(self, server: socket.socket) -> None:
        threading.Thread(target=self._accept_control, args=(server,), daemon=True).start()

    def _accept_control(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_control_client, args=(conn,), daemon=True).start()

    def _serve_control_client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            for raw in stream:
                try:
                    req = json.loads(raw)
                    if not isinstance(req, dict):
                        raise ValueError("a request is a JSON object")
                    reply = {"ok": True, "result": self.handle(req)}
                except (ValueError, KeyError, TypeError, RuntimeError) as exc:
                    reply = {"ok": False, "error": str(exc) or type(exc).__name__}
                stream.write((json.dumps(reply) + "\n").encode())
                stream.flush()

    def close(self) -> None:
        self.closing = True
        self.power_off()
        self.link_server.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["cpython", "micropython"], default="micropython")
    parser.add_argument("--flash", type=Path, required=True, help="the board's flash directory")
    parser.add_argument("--control", default="127.0.0.1:0", help="control socket HOST:PORT")
    parser.add_argument("--heap", default=DEFAULT_HEAP, help=f"MicroPython heap in bytes or with K/M (default {DEFAULT_HEAP}, a Pico W's)")
    parser.add_argument("--seed", type=int, default=0, help="world random seed (0: random)")
    parser.add_argument("--world", default="{}", help="initial world settings as JSON")
    parser.add_argument("--no-install", action="store_true",
                        help="boot what is on the flash as it is (no firmware copy)")
    args = parser.parse_args(argv)

    flash = args.flash.resolve()
    flash.mkdir(parents=True, exist_ok=True)
    if not args.no_install:
        install_firmware(flash, runtime=args.runtime)
    board = Board(args.runtime, flash, heap=args.heap, seed=args.seed,
                  world=json.loads(args.world), stdin_passthrough=True)
    signals = StopSignals(stop=(signal.SIGTERM,))  # Ctrl-C still ends it with KeyboardInterrupt
    # The control line comes first on the console; requests wait in the listen queue until
    # the board is powered.
    host, _, port = args.control.rpartition(":")
    server = board.serve_control(host or "127.0.0.1", int(port), accept=False)
    print("[board] control: %s:%d (JSON lines; {\"cmd\": \"help\"})" % server.getsockname()[:2],
          flush=True)
    board.power_on()
    board.accept_control(server)

    def forward_stdin():
        for line in sys.stdin:
            try:
                board.type_line(line)
            except RuntimeError:
                pass

    threading.Thread(target=forward_stdin, daemon=True).start()
    try:
        while not signals.stopping:
            proc = board.proc
            if board.powered and proc is not None and proc.poll() is not None:
                time.sleep(0.3)  # a reset in progress replaces proc
                if board.proc is proc and board.powered:
                    code = proc.returncode
                    print(f"[board] the board stopped (exit {code})", flush=True)
                    return 0 if code == 0 else 1
            signals.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        board.close()
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
