"""A fresh copy of the repository and commands run in it as a user's terminal runs them:
what the README's commands are tested with (tests/test_demo.py, test_readme_quickstart.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "demo-test-token-0123456789abcdef"  # PICOCHARGE_ADMIN_TOKEN of the runs


def fresh_copy(target: Path, cache: bool = False) -> Path:
    """The repository's files as they are now, ignored ones left out (what a clone of this
    tree holds), with mtimes kept. Its `.venv` is a venv of its own that sees this suite's
    installed packages, its install stamps current: the clone's `make` finds everything
    installed and installs nothing, and can never write into the suite's venv (building a
    venv from scratch is the fresh-machine tests' part). With `cache`, `.cache` (the
    MicroPython build `make test` checks; building it again takes minutes) is shared."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    archive = target.with_suffix(".tar")
    with tarfile.open(archive, "w") as tar:
        for name in files:
            if name and (ROOT / name).exists():
                tar.add(ROOT / name, arcname=name, recursive=False)
    target.mkdir()
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+; Debian 12's 3.11.2 has none
            tar.extractall(target, filter="tar")
        else:
            tar.extractall(target)  # our own archive, made just above
    venv = target / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    shared = Path(sysconfig.get_paths()["purelib"])
    mine = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (mine / "_suite_packages.pth").write_text(str(shared) + "\n")
    for stamp in (".installed", ".installed-dev"):
        (venv / stamp).touch()
    if cache:
        (target / ".cache").symlink_to(ROOT / ".cache")
    return target


def ctrl_c_default() -> None:
    """In the child before it runs: SIGINT does what it does in a terminal. A test run
    started in the background (`cmd &` without job control, as some CI runners start
    jobs) inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """A command run in `clone` in its own process group, as a terminal runs it (Ctrl-C =
    SIGINT to the group), its output collected; PICOCHARGE_ADMIN_TOKEN set to TOKEN."""

    def __init__(self, clone: Path, command: list[str], env: dict | None = None) -> None:
        env = {**os.environ, "PICOCHARGE_ADMIN_TOKEN": TOKEN, **(env or {})}
        self.proc = subprocess.Popen(command, cwd=clone, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, preexec_fn=ctrl_c_default)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"it ended ({self.proc.returncode}):\n{self.text}")
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.text}")

    def ctrl_c(self, timeout: float = 90) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout)


def api(base: str, path: str):
    request = urllib.request.Request(base + "/api/v1" + path,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def energy_readings(base: str, tx_id: int) -> list[int]:
    tx = api(base, f"/transactions/{tx_id}")
    return [int(float(row["value"])) for row in tx["meter_values"]
            if row["measurand"] == "Energy.Active.Import.Register"]


def stop_leftovers(path: Path) -> list[str]:
    """Kill (and list) what is still running from `path`: after a failure too, nothing of
    the demo may outlive the test."""
    leftovers = processes_under(path)
    for line in leftovers:
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftovers


def processes_under(path: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(path) in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found
