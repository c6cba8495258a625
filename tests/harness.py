"""Drive a simulated board from a test: boot it, read its console, poke its world.

`BoardHarness` wraps `tools.board.Board` (the same object `python -m tools.board` uses),
capturing the serial console so a test can wait for lines. Runtimes: "micropython" (the
Unix port at a Pico W's heap, 191 872 bytes) and "cpython".
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from tools.board import (
    DEFAULT_HEAP,
    FIRMWARE,
    MICROPYTHON,
    PICO_W_HEAP_BYTES,
    STUBS,
    STUBS_CPYTHON,
    Board,
    check_micropython,
    install_firmware,
)

# The Pico W's heap (see tools/board.py and docs/firmware.md "Heap").
HEAP = DEFAULT_HEAP
HEAP_BYTES = PICO_W_HEAP_BYTES


def run_script(runtime: str, script: str, timeout: float = 60, cwd=None,
               firmware: bool = True) -> str:
    """Run `script` on "micropython" (the Pico W heap build) or "cpython", with the
    hardware stand-ins (and the firmware's lib/ unless `firmware` is False) importable;
    the exit status must be 0; returns its stdout."""
    env = dict(os.environ)
    lib = [str(FIRMWARE / "lib")] if firmware else []
    if runtime == "micropython":
        check_micropython()
        env["MICROPYPATH"] = os.pathsep.join([".frozen", *lib, str(STUBS)])
        cmd = [str(MICROPYTHON), "-X", f"heapsize={DEFAULT_HEAP}", "-c", script]
    else:
        env["PYTHONPATH"] = os.pathsep.join([*lib, str(STUBS), str(STUBS_CPYTHON)])
        cmd = [sys.executable, "-c", "import hostcompat\n" + script]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class Console:
    """A thread-safe, bounded capture of the board's serial output."""

    def __init__(self, echo=False, limit=2_000_000):
        self.text = ""
        self.cond = threading.Condition()
        self.echo = echo
        self.limit = limit

    def write(self, s: str) -> None:
        with self.cond:
            self.text = (self.text + s)[-self.limit:]
            self.cond.notify_all()
        if self.echo:
            print(s, end="")

    def flush(self) -> None:
        pass

    def wait_for(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match:
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                match = regex.search(self.text, start)
                if match:
                    return match
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"console never showed {pattern!r} within {timeout}s; last output:\n"
                        + self.text[-3000:])
                self.cond.wait(left)

    def mark(self) -> int:
        with self.cond:
            return len(self.text)


class BoardHarness:
    def __init__(self, runtime: str, flash: Path, config: dict | None, world: dict | None = None,
                 heap: str = HEAP, seed: int = 1):
        self.runtime = runtime
        self.flash = flash
        flash.mkdir(parents=True, exist_ok=True)
        if config is not None:
            (flash / "config.json").write_text(json.dumps(config))
        install_firmware(flash, runtime=runtime)
        self.console = Console()
        settings = {"dht_blocking_ms": 0}
        settings.update(world or {})
        self.board = Board(runtime, flash, heap=heap, seed=seed, world=settings,
                           console=self.console)

    def start(self) -> BoardHarness:
        self.board.power_on()
        return self

    def control(self, cmd: str, **kwargs):
        return self.board.handle(dict(kwargs, cmd=cmd))

    def world(self) -> dict:
        return self.control("state")["world"]

    def wait_for(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match:
        return self.console.wait_for(pattern, timeout, start)

    def host_lag_ms(self) -> int | None:
        """The longest the host held this board's process (its machine.Timer's delay behind
        a deadline, ms on the board's clock), or None when the board cannot say (off)."""
        try:
            return int(self.world()["timer_late_max_ms"])
        except Exception:
            return None

    def stop(self) -> None:
        self.board.close()


def sensor_reports(text: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(r"^sensors (\{.*\})$", text, re.M)]
