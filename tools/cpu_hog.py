"""Run a command beside CPU hogs: a loaded machine on purpose (`make test-stress`).

    python -m tools.cpu_hog [--per-core N] -- COMMAND...

Starts N (default 1) busy-spinning processes per core (`os.cpu_count()`), plain Python
loops at normal priority, runs COMMAND, then stops the hogs by their PID, and exits with
COMMAND's exit status (128 + the signal number when a signal ended it, as a shell says).
A timing assumption that only holds on an idle machine shows up as a failure here instead
of on a busy CI runner or a developer's laptop that is compiling something.

The hogs are stopped however the run ends: COMMAND finished or failed, COMMAND could not
be started (exit status 127), Ctrl-C, SIGTERM or SIGHUP (forwarded to COMMAND; Ctrl-C at a
terminal already reaches COMMAND, which shares the terminal's process group, so SIGINT is
not forwarded: the hogs are stopped at once and COMMAND is waited for). If this process
itself is killed with SIGKILL, each hog notices within POLL_S seconds that its parent is
gone (`os.getppid()` changed) and exits. The hogs run in their own session, so a Ctrl-C
never reaches them half-way through the clean-up.

COMMAND gets the hogs' PIDs in the environment variable CPU_HOG_PIDS (space-separated).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

POLL_S = 0.5  # how often a hog looks whether its parent is still there

# One hog: spin; between spins of POLL_S seconds check the parent, exit once it changed.
HOG = """\
# tools.cpu_hog: a busy process
import os, sys, time
parent, poll = int(sys.argv[1]), float(sys.argv[2])
while os.getppid() == parent:
    end = time.monotonic() + poll
    while time.monotonic() < end:
        pass
"""


def start_hog() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOG, str(os.getpid()), str(POLL_S)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True)


def kill_hogs(hogs: list[subprocess.Popen]) -> None:
    """SIGKILL every hog not yet reaped (safe in a signal handler: no waiting)."""
    for hog in hogs:
        if hog.returncode is None:
            try:
                os.kill(hog.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.cpu_hog", description=__doc__.splitlines()[0],
        usage="%(prog)s [--per-core N] -- COMMAND...")
    parser.add_argument("--per-core", type=int, default=1, metavar="N",
                        help="busy processes per core (default 1)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run")
    if "--" in argv:
        cut = argv.index("--")
        args = parser.parse_args(argv[:cut])
        args.command = argv[cut + 1:]
    else:
        args = parser.parse_args(argv)
    if not args.command:
        parser.error("no COMMAND given (python -m tools.cpu_hog -- COMMAND...)")
    if args.per_core < 0:
        parser.error("--per-core must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cores = os.cpu_count() or 1
    count = args.per_core * cores
    hogs: list[subprocess.Popen] = []
    command: subprocess.Popen | None = None
    stopped: list[int] = []  # the signals received
    forwarded: list[int] = []  # ... and those passed on to COMMAND

    def forward(signum):
        if signum != signal.SIGINT and command is not None and command.returncode is None:
            forwarded.append(signum)
            try:
                command.send_signal(signum)
            except ProcessLookupError:
                pass

    def on_signal(signum, _frame):
        stopped.append(signum)
        kill_hogs(hogs)
        forward(signum)

    previous = {sig: signal.signal(sig, on_signal)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        for _ in range(count):
            if stopped:
                break
            hogs.append(start_hog())
        if stopped:
            return 128 + stopped[0]
        print(f"[cpu_hog] {count} busy processes beside the run ({cores} cores)", flush=True)
        env = dict(os.environ, CPU_HOG_PIDS=" ".join(str(hog.pid) for hog in hogs))
        try:
            command = subprocess.Popen(args.command, env=env)
        except OSError as exc:
            print(f"[cpu_hog] cannot run {args.command[0]!r}: {exc}", file=sys.stderr)
            return 127
        if stopped and not forwarded:  # a signal came while it started
            forward(stopped[0])
        code = command.wait()
        return code if code >= 0 else 128 - code
    finally:
        kill_hogs(hogs)
        for hog in hogs:
            hog.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
