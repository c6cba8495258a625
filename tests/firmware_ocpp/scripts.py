"""Run a snippet of firmware code in a fresh process on either runtime.

The snippet sees `firmware/lib` on its path (plus the stand-ins), as the board does, and
runs on the MicroPython Unix port at a Pico W's heap or on CPython with the host shims. It prints
its results; the test parses them.

`compiled=True` (MicroPython) installs the firmware into `cwd/fw` as .mpy first, as a board
gets it (loading the whole charge point from source at a Pico W's heap needs the compiler's heap on
top of it). `start_snippet` is the same, without waiting: it returns the running process,
its output going to `cwd/out.txt`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tools.board import DEFAULT_HEAP, MICROPYTHON, MPLIB, STUBS, STUBS_CPYTHON, install_firmware

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "firmware" / "lib"


def _command(runtime: str, code: str, cwd: Path, compiled: bool = False, unbuffered=False):
    env = dict(os.environ)
    if runtime == "micropython":
        lib = LIB
        if compiled:
            install_firmware(cwd / "fw")
            lib = cwd / "fw" / "lib"
        env["MICROPYPATH"] = os.pathsep.join([".frozen", str(lib), str(MPLIB), str(STUBS)])
        cmd = [str(MICROPYTHON), "-X", f"heapsize={DEFAULT_HEAP}", "-c", code]
    else:
        env["PYTHONPATH"] = os.pathsep.join([str(LIB), str(STUBS), str(STUBS_CPYTHON)])
        cmd = [sys.executable] + (["-u"] if unbuffered else []) + ["-c", "import hostcompat\n" + code]
    return cmd, env


def run_snippet(runtime: str, code: str, cwd: Path, timeout: float = 60.0,
                compiled: bool = False) -> str:
    cmd, env = _command(runtime, code, cwd, compiled)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd,
                            timeout=timeout)
    assert result.returncode == 0, f"snippet failed on {runtime}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def start_snippet(runtime: str, code: str, cwd: Path, compiled: bool = False) -> subprocess.Popen:
    """Start a snippet; stdout and stderr go to `cwd/out.txt`."""
    cwd.mkdir(parents=True, exist_ok=True)
    cmd, env = _command(runtime, code, cwd, compiled, unbuffered=True)
    out = open(cwd / "out.txt", "w")
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    finally:
        out.close()
