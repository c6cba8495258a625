"""Where the server's time goes under load: a sampling profile of the server process
(py-spy, only samples of threads holding the GIL, i.e. Python work) taken during a
benchmark step, summarised by component.

Each sample is charged to the innermost frame that belongs to a component we know
(validation, store, MQTT client, WebSocket library, JSON, OCPP handling, ingest, HTTP,
event loop); `busy_percent` is the share of wall time some thread ran Python code, the
most a single-process CPython server can use of one core.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# innermost match wins: a library frame inside OCPP handling counts as the library
COMPONENTS = (
    ("schema validation", ("jsonschema/", "fastjsonschema", "server/validation.py",
                           "server/ocpp/schemas.py", "referencing/")),
    ("JSON encode/decode", ("json/",)),
    ("SQLite store", ("server/store/", "sqlite3")),
    ("MQTT client (paho)", ("paho/",)),
    ("WebSocket (websockets)", ("websockets/",)),
    ("OCPP handling", ("server/ocpp/", "server/fleet.py")),
    ("MQTT ingest", ("server/mqtt/",)),
    ("HTTP API", ("waitress/", "flask/", "werkzeug/", "server/web/")),
    ("event loop, sockets, threads", ("asyncio/", "selectors.py", "socket.py", "threading.py",
                                      "queue.py")),
)
RATE_HZ = 100


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else None


class Profiler:
    """Records `seconds` of the process `pid` in the background."""

    def __init__(self, pid: int, seconds: float, out: Path):
        self.out = out
        self.seconds = seconds
        self.error = None
        self.proc = None
        exe = py_spy()
        if exe is None:
            self.error = "py-spy is not installed"
            return
        self.log = out.with_suffix(".log")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
             "--rate", str(RATE_HZ), "--gil", "--nonblocking", "--format", "raw",
             "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))

    def finish(self) -> dict:
        if self.proc is not None:
            try:
                self.proc.wait(self.seconds + 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.error = "py-spy did not finish"
            if self.proc.returncode not in (0, None) and not self.out.exists():
                self.error = "py-spy failed: " + self.log.read_text()[-300:].strip()
        if self.error:
            return {"error": self.error}
        if not self.out.exists():
            return {"error": "py-spy wrote no profile"}
        return summarise(self.out.read_text().splitlines(), self.seconds)


def component(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in COMPONENTS:
            if any(m in frame for m in markers):
                return name
    return "other"


def summarise(lines: list[str], seconds: float, top: int = 12) -> dict:
    """Folded stacks ("f1;f2;...;leaf count") -> shares by component and the top
    functions by own time, in % of the samples."""
    by_component: Counter = Counter()
    by_function: Counter = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        by_component[component(frames)] += n
        by_function[frames[-1]] += n
    if not total:
        return {"error": "no samples (the server ran no Python code?)"}

    def share(n):
        return round(100.0 * n / total, 1)

    return {
        "samples": total,
        "seconds": seconds,
        "busy_percent": round(100.0 * total / (RATE_HZ * seconds), 1),
        "components": {k: share(v) for k, v in by_component.most_common()},
        "top_functions": [[f, share(v)] for f, v in by_function.most_common(top)],
    }
