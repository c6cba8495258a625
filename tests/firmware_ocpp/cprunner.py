"""Run the firmware's ChargePoint in a child process (CPython or the MicroPython Unix port
at a Pico W's heap) on the station test double, driven through a file: the test writes
`ev.json` ({"pilot": "C", "taps": n, "tag": ..., "faults": [...], "weld": false, "draw_a": null,
"exit": false}; fakestation.py says what they do) in the child's directory, the child applies
it every 100 ms and, when told to exit, prints `HEAP <lowest free bytes>` (MicroPython),
sampled after a gc.collect() every 0.5 s, so it counts live data (code included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.waiting import wait_until  # noqa: F401 - the charge point tests import it from here
from tools.board import (
    DEFAULT_HEAP,
    MICROPYTHON,
    STUBS,
    STUBS_CPYTHON,
    check_micropython,
    install_firmware,
)

HERE = Path(__file__).resolve().parent
LIB = HERE.parents[1] / "firmware" / "lib"

CHILD = r'''
import sys
sys.path.append(%(here)r)
import asyncio, gc, json
from fakestation import FakeStation
from storage import Flash
%(flash_import)s
from clock import Clock
from chargepoint import ChargePoint
cfg = json.loads(%(config)r)
st = FakeStation()
try:  # the station's energy register survives reboots (persisted, like the real one)
    with open("wh.txt") as fh:
        st.wh = float(fh.read())
except (OSError, ValueError):
    pass
cp = ChargePoint(cfg, st, Flash("flash"), Clock(), on_reset=lambda k: print("RESET", k))
low = [1 << 30]
def read_cmd():
    try:
        with open("ev.json") as fh:
            return json.loads(fh.read())
    except (OSError, ValueError):
        return None
first = read_cmd() or {}
seen = [first.get("taps", 0)]  # a card tap before this boot is not replayed
async def driver():
    n = 0
    while True:
        await asyncio.sleep(0.1)
        st.tick(0.1 * 60)
        n += 1
        if n %% 5 == 0:
            with open("wh.tmp", "w") as fh:
                fh.write("%%.3f" %% st.wh)
            import os
            os.rename("wh.tmp", "wh.txt")
        if n %% 5 == 0 and hasattr(gc, "mem_free"):
            gc.collect()  # live data only: the lowest free heap after a collection
            low[0] = min(low[0], gc.mem_free())
        cmd = read_cmd()
        if cmd is None:
            continue
        if "pilot" in cmd:
            st.pilot = cmd["pilot"]
        if cmd.get("taps", 0) > seen[0]:
            seen[0] = cmd["taps"]
            print("local_start", cp.local_start(cmd.get("tag", "CARD1")))
        st.fault_list = [tuple(f) for f in cmd.get("faults", [])]
        st.welded = bool(cmd.get("weld"))
        st.draw_a = cmd.get("draw_a")
        if cmd.get("exit"):
            # what is queued gets its chance to go first while the link is online (a loaded
            # host delays the last StatusNotification behind the StopTransaction's answer),
            # at most 30 s; offline, nothing would go
            for _ in range(300):
                if not cp.outbox.items or not cp.link.online.is_set():
                    break
                await asyncio.sleep(0.1)
            print("HEAP", low[0])
            print("SUMMARY", json.dumps(cp.summary()))
            # what is still queued, for a test that finds the queue not empty
            print("QUEUED", json.dumps([m[0] for m in cp.outbox.items]), len(cp.journal))
            if sys.implementation.name == "cpython":
                # CPython's asyncio.run would cancel cp.run() and wait for it, and a
                # cancellation the link swallows (it awaits its ended reader under
                # `except BaseException`) would hang the process; MicroPython just exits
                import os
                sys.stdout.flush()
                os._exit(0)
            sys.exit(0)
async def main():
    asyncio.create_task(driver())
    await cp.run()
asyncio.run(main())
'''


class ChargePointProcess:
    def __init__(self, runtime: str, workdir: Path, config: dict, flash_module: str | None = None):
        """flash_module: a module in tests/firmware_ocpp whose `Flash` replaces storage.Flash
        (a test double of the flash, e.g. one that can be made full)."""
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.state: dict = {}
        # a fresh command file: a previous process in this directory left `exit` (and its
        # card taps) there, which this one would obey the moment it starts
        self.ev()
        code = CHILD % {"here": str(HERE), "config": json.dumps(config),
                        "flash_import": "from %s import Flash" % flash_module if flash_module else ""}
        env = dict(os.environ)
        if runtime == "micropython":
            check_micropython()
            # as on a board: the modules as compiled .mpy (loading them from source at
            # a Pico W's heap needs the compiler's heap on top of the charge point's)
            install_firmware(workdir / "fw")
            env["MICROPYPATH"] = os.pathsep.join([".frozen", str(workdir / "fw" / "lib"), str(STUBS)])
            cmd = [str(MICROPYTHON), "-X", f"heapsize={DEFAULT_HEAP}", "-c", code]
        else:
            env["PYTHONPATH"] = os.pathsep.join([str(LIB), str(STUBS), str(STUBS_CPYTHON)])
            cmd = [sys.executable, "-u", "-c", "import hostcompat\n" + code]
        self.out = open(workdir / "console.txt", "a")
        self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=self.out,
                                     stderr=subprocess.STDOUT)

    def ev(self, start=False, **changes) -> None:
        """Change what the EV does; start=True presents the card (`tag`) once."""
        self.state.update(changes)
        if start:
            self.state["taps"] = self.state.get("taps", 0) + 1
        tmp = self.dir / "ev.json.tmp"
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.dir / "ev.json")

    def console(self) -> str:
        return (self.dir / "console.txt").read_text()

    def finish(self, timeout: float = 60) -> str:
        self.ev(exit=True)
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.out.close()
        return self.console()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


