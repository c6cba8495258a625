"""tools/cpu_hog.py (`make test-stress`): one busy process per core beside a command, every
one of them gone when the run ends however it ends, and the command's exit status passed
through. Starts processes, so not a `unit` test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
MARK = "tools.cpu_hog: a busy process"  # the first line of a hog's program (its cmdline)
CORES = os.cpu_count() or 1

# Run by cpu_hog: find the hogs (the other children of its parent), see that every one of
# them burns CPU, print their PIDs, exit 3.
COMMAND = r"""
import os, sys, time
import psutil
runner = psutil.Process().parent()
hogs = [p for p in runner.children() if p.pid != os.getpid()]
assert sorted(p.pid for p in hogs) == sorted(map(int, os.environ["CPU_HOG_PIDS"].split())), hogs
start = {p.pid: sum(p.cpu_times()[:2]) for p in hogs}
deadline = time.monotonic() + 20
while True:
    time.sleep(0.5)
    used = {p.pid: sum(p.cpu_times()[:2]) - start[p.pid] for p in hogs}
    if all(u >= 0.05 for u in used.values()) or time.monotonic() > deadline:
        break
print("HOGS", " ".join(str(p.pid) for p in hogs))
print("USED", " ".join("%.2f" % u for u in used.values()))
sys.exit(3)
"""


def hog_runs(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and MARK in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def hogs_alive_of(runner_pid: int) -> list[int]:
    """Hogs still running that `runner_pid` started (a hog's argv names its parent), found
    among all processes: a hog whose runner is gone is no longer its child."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if len(argv) >= 4 and MARK in argv[2] and argv[3] == str(runner_pid) \
                and hog_runs(proc.pid):
            found.append(proc.pid)
    return found


def runner(*command: str, per_core: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tools.cpu_hog", "--per-core", str(per_core),
                             "--", *command], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def spinning_hogs_of(proc: subprocess.Popen, count: int) -> list[int]:
    """The runner's `count` hogs, once each has spun a while (past its interpreter's start,
    in the loop that watches the parent)."""
    def spinning():
        hogs = [c for c in psutil.Process(proc.pid).children() if hog_runs(c.pid)]
        try:
            busy = all(sum(h.cpu_times()[:2]) >= 0.15 for h in hogs)
        except psutil.Error:
            return None
        return [h.pid for h in hogs] if len(hogs) == count and busy else None
    return wait_until(spinning, timeout=30, what=f"{count} spinning hogs of the runner")


def test_hogs_burn_cpu_beside_the_command_and_are_gone_after_it_with_its_exit_status():
    result = subprocess.run([sys.executable, "-m", "tools.cpu_hog", "--", sys.executable, "-c",
                             COMMAND], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"[cpu_hog] {CORES} busy processes beside the run ({CORES} cores)"
    pids = [int(p) for p in lines[1].split()[1:]]
    used = [float(u) for u in lines[2].split()[1:]]
    assert len(pids) == CORES and all(u >= 0.05 for u in used), result.stdout
    assert not any(hog_runs(pid) for pid in pids)


def test_per_core_sets_the_number_and_a_command_that_cannot_start_is_127():
    proc = runner("no-such-command-anywhere", per_core=2)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 127
    assert out.startswith(f"[cpu_hog] {2 * CORES} busy processes beside the run")
    assert hogs_alive_of(proc.pid) == []


def test_sigterm_ends_the_command_and_the_hogs():
    proc = runner(sys.executable, "-c", "import time; time.sleep(60)")
    try:
        hogs = spinning_hogs_of(proc, CORES)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert not any(hog_runs(pid) for pid in hogs) and hogs_alive_of(proc.pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_hogs_exit_by_themselves_when_the_runner_is_killed():
    proc = runner(sys.executable, "-c", "import time; time.sleep(60)")
    command = None
    try:
        hogs = spinning_hogs_of(proc, CORES)
        command = next(c for c in psutil.Process(proc.pid).children() if c.pid not in hogs)
        proc.kill()  # SIGKILL: no clean-up in the runner
        proc.wait()
        started = time.monotonic()
        assert all(hog_runs(pid) for pid in hogs)  # orphaned, still spinning
        wait_until(lambda: not any(hog_runs(pid) for pid in hogs), timeout=20,
                   what="the hogs to notice their parent is gone")
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if command is not None:
            try:
                command.kill()  # the orphaned command (nothing else stops it)
            except psutil.NoSuchProcess:
                pass
