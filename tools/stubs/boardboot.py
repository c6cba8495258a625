"""Boot a simulated Pico W inside this process: the child side of `python -m tools.board`.

Runs on the MicroPython Unix port (`micropython -X heapsize=191872 -m boardboot`) and on
CPython. It builds the world, opens the private link to the runner (commands in, replies
and reset requests out, JSON lines), changes into the board's flash directory and runs
`boot.py` then `main.py` in `__main__`, as the rp2 port does.

Environment (set by the runner):
  PICOCHARGE_LINK      host:port of the runner's private link (optional)
  PICOCHARGE_FLASH     the board's flash directory
  PICOCHARGE_WORLD     JSON: world settings to restore (what a reset must not forget)
  PICOCHARGE_WIRING    JSON: pin roles, from the board's config
  PICOCHARGE_NAME      station name (unique_id, MAC)
  PICOCHARGE_SEED      world random seed
  PICOCHARGE_RESET     reset cause number for machine.reset_cause()
"""

import sys

if sys.implementation.name != "micropython":
    import hostcompat  # noqa: F401  (time.ticks_ms & co. on CPython)

import _thread
import json
import os
import socket

import simworld

_env = os.getenv


def _json_env(name, default):
    raw = _env(name)
    if not raw:
        return default
    return json.loads(raw)


_world = simworld.World(
    wiring=_json_env("PICOCHARGE_WIRING", None),
    seed=int(_env("PICOCHARGE_SEED") or 0) or None,
    name=_env("PICOCHARGE_NAME") or "PICO-0001",
)
for _k, _v in _json_env("PICOCHARGE_WORLD", {}).items():
    if _k in simworld.World.SETTABLE:
        _world.set(_k, _v)
for _pin, _level in _json_env("PICOCHARGE_INPUTS", {}).items():
    _world.set_input(int(_pin) if _pin.isdigit() else _pin, _level)
_world.reset_cause = int(_env("PICOCHARGE_RESET") or 1)
simworld.set_current(_world)


class _Link:
    """JSON-lines link to the runner; one thread reads commands and answers them."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.socket()
        self.sock.connect(socket.getaddrinfo(host, int(port))[0][-1])
        self.lock = _thread.allocate_lock()
        _thread.start_new_thread(self._serve, ())

    def send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        with self.lock:
            view = memoryview(data)
            while view:
                n = self.sock.send(view)
                view = view[n:]

    def _readline(self, buf):
        while b"\n" not in buf[0]:
            # small reads: this thread shares the board's heap with the firmware
            chunk = self.sock.recv(256)
            if not chunk:
                return None
            buf[0] += chunk
        line, rest = buf[0].split(b"\n", 1)
        buf[0] = rest
        return line

    def _serve(self):
        buf = [b""]
        while True:
            line = self._readline(buf)
            if line is None:
                return
            try:
                msg = json.loads(line)
                reply = {"id": msg.get("id"), "ok": True, "result": self._handle(msg)}
            except Exception as exc:  # a bad command is answered, never fatal
                reply = {"id": None, "ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
                try:
                    reply["id"] = msg.get("id")
                except Exception:
                    pass
            self.send(reply)

    def _handle(self, msg):
        cmd = msg.get("cmd")
        if cmd == "get":
            return _world.snapshot()
        if cmd == "set":
            return _world.set(msg["key"], msg.get("value"))
        if cmd == "set_input":
            _world.set_input(msg["pin"], msg["level"])
            return msg["level"]
        raise ValueError("unknown link command: %s" % cmd)


_link_addr = _env("PICOCHARGE_LINK")
_link = _Link(_link_addr) if _link_addr else None


def _reset_handler(reason):
    if _link is None:
        print("board reset (%s) requested with no runner attached" % reason)
        return
    _link.send({"event": "reset", "reason": reason})


_world.reset_handler = _reset_handler

_flash = _env("PICOCHARGE_FLASH")
if _flash:
    os.chdir(_flash)
# The rp2 port's search order: the flash root, frozen modules, /lib; the stand-ins after.
sys.path[:] = ["", ".frozen", "lib"] + [p for p in sys.path if p not in ("", ".", ".frozen")]


def _run(name):
    try:
        with open(name) as fh:
            code = fh.read()
    except OSError:
        return True
    try:
        exec(compile(code, name, "exec"), globals())
    except SystemExit:
        raise
    except BaseException as exc:  # the board prints it and drops to the REPL
        sys.print_exception(exc)
        return False
    return True


if _run("boot.py") and _run("main.py"):
    print("MicroPython main.py finished")
    sys.exit(0)
sys.exit(1)
