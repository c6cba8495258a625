"""`make logs` and `make boot-log` (tools/deploy.py `logs`, `boot-log`) without a board: a
pseudo-terminal stands in for the Pico W's USB serial port (the port's name a symlink, as
/dev/serial/by-id/ names are, so the board can "reset" onto a new terminal). What they type
is then run at the console of a simulated board on MicroPython."""

from __future__ import annotations

import os
import pty
import queue
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.fresh_copy import ctrl_c_default
from tools import deploy
from tools.board import ROOT

HISTORY = b"import ev; ev.log(%d)\r\n"
REBOOT = deploy.REBOOT.encode() + b"\r\n"


class StandIn:
    """The board's end of a serial port: what the follower writes arrives here, what the
    board prints is written here. `reset()` drops the port and brings up a new one."""

    def __init__(self, link):
        self.link = link
        self.master = self.slave = None
        self.plug()

    def plug(self):
        # the board's end keeps the terminal open, as a device is there until it goes
        self.master, self.slave = pty.openpty()
        name = os.ttyname(self.slave)
        tmp = self.link.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(name)
        tmp.replace(self.link)

    def unplug(self):
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = None
        self.link.unlink()

    def reset(self):
        self.unplug()
        time.sleep(0.3)
        self.plug()

    def typed(self, timeout=10.0) -> bytes:
        """One line the follower typed, up to and with its \\r\\n."""
        got = b""
        deadline = time.monotonic() + timeout
        while not got.endswith(b"\r\n"):
            left = deadline - time.monotonic()
            assert left > 0, f"nothing typed (so far {got!r})"
            if select.select([self.master], [], [], left)[0]:
                got += os.read(self.master, 1)
        return got

    def quiet(self, seconds=0.5) -> bytes:
        """Whatever else the follower writes in `seconds` (it should write nothing)."""
        got = b""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.master], [], [], left)[0]:
                try:
                    got += os.read(self.master, 256)
                except OSError:
                    break
        return got

    def prints(self, text: str):
        os.write(self.master, text.replace("\n", "\r\n").encode())


class Follower:
    def __init__(self, *args):
        # SIGINT as in a terminal, also when this run was started in the background with
        # it ignored (tests/fresh_copy.py)
        self.proc = subprocess.Popen([sys.executable, "-m", "tools.deploy", *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=ctrl_c_default)
        self.lines: queue.Queue = queue.Queue()
        self.seen = ""
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)

    def shows(self, text, timeout=10.0):
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            try:
                self.seen += self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{text!r} not shown; shown:\n{self.seen}")

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=10)
        time.sleep(0.1)
        while not self.lines.empty():
            self.seen += self.lines.get()
        return code

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def board(tmp_path):
    stand_in = StandIn(tmp_path / "ttyACM0")
    yield stand_in
    if stand_in.master is not None:
        stand_in.unplug()


@pytest.fixture
def follower():
    started = []

    def start(*args):
        started.append(Follower(*args))
        return started[-1]

    yield start
    for f in started:
        f.stop()


def test_logs_shows_the_flash_history_then_follows_without_interrupting_or_resetting(board,
                                                                                     follower):
    logs = follower("logs", "--port", str(board.link), "--lines", "5")
    assert board.typed() == HISTORY % 5  # the app's console answers it while it runs
    board.prints(">>> import ev; ev.log(5)\nboot: earlier line\n")
    logs.shows("boot: earlier line")
    board.prints("ocpp: connected (ws)\n")
    logs.shows("ocpp: connected (ws)")
    assert board.quiet() == b""  # no Ctrl-C (stops the app), no Ctrl-D (soft reset), nothing
    assert logs.interrupt() == 0  # Ctrl-C ends the follower only
    assert "stopped following; the board carries on" in logs.seen
    assert board.quiet() == b""


def test_logs_waits_for_a_board_that_resets_and_follows_it_again(board, follower):
    logs = follower("logs", "--port", str(board.link), "--lines", "3", "--wait", "10")
    assert board.typed() == HISTORY % 3
    board.reset()
    logs.shows("went away (the board resets?): waiting for it")
    assert board.typed() == HISTORY % 3  # the lines of the new boot so far, from flash
    board.prints("PicoCharge PICO-1 booting (ocpp mode)\n")
    logs.shows("PicoCharge PICO-1 booting (ocpp mode)")
    assert logs.interrupt() == 0


def test_logs_with_no_lines_types_nothing_at_all(board, follower):
    logs = follower("logs", "--port", str(board.link), "--lines", "0")
    logs.shows("-- following")
    board.prints("status: Available\n")
    logs.shows("status: Available")
    assert board.quiet() == b""
    assert logs.interrupt() == 0


def test_boot_log_types_a_clean_reboot_then_follows_the_boot(board, follower):
    boot = follower("boot-log", "--port", str(board.link), "--lines", "30", "--wait", "10")
    assert board.typed() == REBOOT
    board.prints(">>> " + deploy.REBOOT + "\nreboot: REPL\n")
    boot.shows("reboot: REPL")
    board.reset()  # machine.reset(): the USB port goes and comes back
    assert board.typed() == HISTORY % 30  # the boot lines printed before the port was back
    board.prints("PicoCharge PICO-1 booting (ocpp mode)\nready: \n")
    boot.shows("ready: ")
    assert board.quiet() == b""
    assert boot.interrupt() == 0


def test_logs_gives_up_when_the_board_stays_away_past_wait(board, follower):
    logs = follower("logs", "--port", str(board.link), "--lines", "0", "--wait", "1")
    logs.shows("-- following")
    board.unplug()
    assert logs.proc.wait(timeout=15) == 1
    logs.shows("did not come back within 1 s")


def test_logs_without_a_board_says_which_port_failed(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tools.deploy", "logs", "--port",
                          str(tmp_path / "ttyACM7")], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0
    assert "ttyACM7: cannot open it" in out.stderr and "is the board plugged in" in out.stderr


def test_dry_runs_say_what_would_be_typed():
    out = subprocess.run([sys.executable, "-m", "tools.deploy", "boot-log", "--port", "/dev/ttyACM9",
                          "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "no Ctrl-C, no reset" in out.stdout and "ev.reboot()" in out.stdout
    assert "import ev; ev.log(40)" in out.stdout


@pytest.mark.parametrize("runtime", ["micropython-picow"])
def test_what_logs_and_boot_log_type_works_at_the_console_of_a_running_board(board_factory,
                                                                           runtime):
    sim = board_factory({"cp_id": "PICO-0042", "intervals": {"sensors_s": 1}})
    sim.wait_for(r"^ready: ")
    mark = sim.console.mark()
    sim.control("console", line=(HISTORY % 5).decode().strip())
    sim.wait_for(r"PicoCharge PICO-0042 booting", start=mark)  # the log on flash
    mark = sim.console.mark()
    sim.control("console", line=deploy.REBOOT)
    sim.wait_for(r"^reboot: REPL$", start=mark)  # the clean path: contactor open, energy saved
    sim.wait_for(r"^PicoCharge PICO-0042 booting", start=mark, timeout=30)
    assert sim.board.resets == ["hard"]
