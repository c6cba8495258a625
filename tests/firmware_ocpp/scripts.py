"""Run a snippet of firmware code in a fresh process on either runtime.

The snippet sees `firmware/lib` on its path (plus the stand-ins), as the board does, and
runs on the MicroPython Unix port at 192 KiB or on CPython with the host shims. It prints
its results; the test parses them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tools.board import MICROPYTHON, MPLIB, STUBS, STUBS_CPYTHON

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "firmware" / "lib"


def run_snippet(runtime: str, code: str, cwd: Path, timeout: float = 60.0) -> str:
    env = dict(os.environ)
    if runtime == "micropython":
        env["MICROPYPATH"] = os.pathsep.join([".frozen", str(LIB), str(MPLIB), str(STUBS)])
        cmd = [str(MICROPYTHON), "-X", "heapsize=192K", "-c", code]
    else:
        env["PYTHONPATH"] = os.pathsep.join([str(LIB), str(STUBS), str(STUBS_CPYTHON)])
        cmd = [sys.executable, "-c", "import hostcompat\n" + code]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd,
                            timeout=timeout)
    assert result.returncode == 0, f"snippet failed on {runtime}:\n{result.stdout}\n{result.stderr}"
    return result.stdout
