"""Wait in the main thread for SIGTERM/SIGINT (or SIGHUP) without taking a lock in the
signal handler.

Python runs a signal handler in the main thread between two bytecodes, possibly while
that thread holds the lock inside ``threading.Event.wait()``. A handler that calls
``Event.set()`` then waits for a lock its own thread holds: the process ignores every
later SIGTERM and has to be killed (seen once in CI as a server that did not stop within
60 s; reproduced with a bare ``Event`` loop, 1 hang in 200). The handler here only records
the signal and writes one byte to a pipe; the main thread waits on that pipe."""

from __future__ import annotations

import os
import select
import signal


class StopSignals:
    def __init__(self, stop=(signal.SIGTERM, signal.SIGINT), other=()) -> None:
        self.stop_signals = tuple(stop)
        self.received: list[int] = []  # list.append takes no lock a handler could wait on
        self._taken: dict[int, int] = {}
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        for signum in (*self.stop_signals, *other):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.received.append(signum)
        try:
            os.write(self._write, b"!")
        except OSError:
            pass  # the pipe is full: a wake-up is pending already

    @property
    def stopping(self) -> bool:
        return any(s in self.stop_signals for s in self.received)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a stop signal came or `timeout` passed; True once one came."""
        if not self.stopping:
            select.select([self._read], [], [], timeout)
            try:
                os.read(self._read, 64)
            except OSError:
                pass
        return self.stopping

    def take(self, signum: int) -> bool:
        """True (once per arrival) if `signum` came since the last call, e.g. a SIGHUP."""
        arrived = self.received.count(signum)  # the list only grows: nothing to lose
        if arrived > self._taken.get(signum, 0):
            self._taken[signum] = arrived
            return True
        return False
