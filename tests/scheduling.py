"""Longest tests first across the pytest-xdist workers.

The suite mostly waits, and its wall time is set by how its long tests fall on the workers:
started last, the 3-minute outage soak alone adds three minutes to the run. So the
collection is ordered by an estimate of each test's length (the same order on every
worker): the campaigns first (marked ``slow(seconds=...)``), then the board and charge
point scenarios (a simulated board or MicroPython process each, seconds to tens of
seconds), then the rest. ``LongestFirstScheduling`` hands each worker the next test of that
order whenever it finishes one (a greedy longest-processing-time schedule), so the
campaigns start at once on different workers and the short tests fill the gaps at the end.

Tests marked ``cpu_hungry`` (throughput campaigns whose checks involve no timing: generated
API requests, crash campaigns) run at a lower CPU priority, they and every thread and
process they start: on a loaded two-core machine the board simulations, whose sampled
meters and watchdogs run on the wall clock, get the CPU first.
"""

from __future__ import annotations

import contextlib
import os

import pytest
from xdist.scheduler import LoadScheduling

# Directories whose tests each run a simulated board or charge point process.
BOARD_TEST_DIRS = ("firmware_ocpp", "firmware_station")
# Assumed length of a `slow` test that does not say (seconds).
SLOW_DEFAULT_S = 60


def estimated_seconds(item: pytest.Item) -> float:
    """A rough length for ordering only: campaigns say theirs, board scenarios ~10 s."""
    slow = item.get_closest_marker("slow")
    if slow is not None:
        return float(slow.kwargs.get("seconds", SLOW_DEFAULT_S))
    callspec = getattr(item, "callspec", None)
    on_a_board = callspec is not None and "runtime" in callspec.params
    if on_a_board or any(part in BOARD_TEST_DIRS for part in item.path.parts):
        return 10.0
    return 1.0


# How much lower a cpu_hungry test runs (nice increment; Linux gives a nice-10 thread about
# a tenth of the CPU a nice-0 one gets when both want it).
CPU_HUNGRY_NICE = 10


@contextlib.contextmanager
def lower_priority_if_cpu_hungry(item: pytest.Item):
    """Nice the calling thread (on Linux a thread's own; threads and processes it starts
    inherit it) while a cpu_hungry test runs; back afterwards where the user may raise
    priority (root), else the worker stays nice, which only makes it yield more."""
    if item.get_closest_marker("cpu_hungry") is None:
        yield
        return
    before = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, min(before + CPU_HUNGRY_NICE, 19))
    try:
        yield
    finally:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, before)


def order_longest_first(items: list[pytest.Item]) -> None:
    """Sort in place, longest first; ties keep the collection order (stable sort)."""
    items.sort(key=estimated_seconds, reverse=True)


class LongestFirstScheduling(LoadScheduling):
    """xdist's load scheduling, but one test at a time from the front of the order.

    The stock scheduler sends each worker a block of consecutive tests at the start, which
    would put all the campaigns on the first worker. A worker needs a second test queued
    before it runs its first (pytest runs a test knowing the next one), so each worker
    starts with one long test from the front and one short one from the back."""

    def __init__(self, config: pytest.Config, log=None) -> None:
        super().__init__(config, log)
        if self.maxschedchunk is None:
            self.maxschedchunk = 1

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None or not self._check_nodes_have_same_collection():
            super().schedule()
            return
        if len(next(iter(self.node2collection.values()))) < 2 * len(self.nodes):
            super().schedule()  # a few tests: xdist deals them out one per worker in turn
            return
        self.collection = next(iter(self.node2collection.values()))
        self.pending[:] = range(len(self.collection))
        for node in self.nodes:
            first = [self.pending.pop(0)] if self.pending else []
            last = [self.pending.pop()] if self.pending else []
            if first + last:
                self.node2pending[node].extend(first + last)
                node.send_runtest_some(first + last)
        if not self.pending:
            for node in self.nodes:
                node.shutdown()
