"""Shared fixtures: the dual-runtime firmware scenarios and the heap report; the suite's
order and its spread over the xdist workers (tests/scheduling.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hostpace  # noqa: E402
from harness import HEAP, HEAP_BYTES, BoardHarness  # noqa: E402
from scheduling import (  # noqa: E402
    LongestFirstScheduling,
    lower_priority_if_cpu_hungry,
    order_longest_first,
)

from tools.board import MICROPYTHON  # noqa: E402

pytest_plugins = ("tests.unit.fixtures",)

RUNTIMES = ["cpython", "micropython-picow"]
HEAP_REPORT: list[tuple[str, int]] = []


def pytest_generate_tests(metafunc):
    if "runtime" in metafunc.fixturenames and metafunc.definition.get_closest_marker("dual_runtime"):
        metafunc.parametrize("runtime", RUNTIMES)


def pytest_collection_modifyitems(items):
    order_longest_first(items)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    with lower_priority_if_cpu_hungry(item):
        yield


@pytest.hookimpl(optionalhook=True)  # xdist's hook: `-p no:xdist` runs without it
def pytest_xdist_make_scheduler(config, log):
    """Longest tests first, one at a time, when the run is spread by load (`make test`)."""
    if config.getoption("dist") == "load":
        return LongestFirstScheduling(config, log)
    return None


HOST_PACE: dict = {}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: as many workers as this host carries now (tests/hostpace.py)."""
    workers, pace = hostpace.choose_workers()
    HOST_PACE.update(pace, workers=workers)
    return workers


def pytest_report_header(config):
    if HOST_PACE:
        p = HOST_PACE
        return (f"host pace: {p['cores']} cores, CPU share {p['cpu_share']}, wake-up lag "
                f"{p['lag_ms']} ms, load {p['load']}: {p['workers']} workers"
                + (" (PICOCHARGE_TEST_WORKERS)" if p.get("forced") else ""))
    return None


@pytest.fixture
def runtime_name(runtime):
    return runtime.split("-")[0]


@pytest.fixture
def board_factory(tmp_path, runtime_name):
    """Build and boot boards for a test; every board is stopped afterwards."""
    if runtime_name == "micropython" and not MICROPYTHON.exists():
        pytest.fail(f"{MICROPYTHON} is missing: `make test` builds it (make micropython)")
    boards = []

    def make(config, world=None, flash=None, start=True):
        harness = BoardHarness(runtime_name, flash or tmp_path / f"flash{len(boards)}", config, world)
        boards.append(harness)
        return harness.start() if start else harness

    yield make
    for harness in boards:
        lag = harness.host_lag_ms()
        harness.stop()
        # captured by pytest: shown only when the test failed, with how far the host held the
        # board (a wrong figure on a host that held it for seconds names its cause)
        print(f"--- console of {harness.flash.name} ({runtime_name}), host lag {lag} ms at most, "
              "last 4000 characters ---")
        print(harness.console.text[-4000:])


@pytest.fixture
def record_heap(request):
    """Record the peak heap a MicroPython scenario used (the Pico W heap minus the lowest free)."""

    def record(min_free: int):
        HEAP_REPORT.append((request.node.nodeid, HEAP_BYTES - min_free))

    return record


def pytest_terminal_summary(terminalreporter):
    if not HEAP_REPORT:
        return
    terminalreporter.section(f"MicroPython Unix port (32-bit), heap {HEAP} bytes: peak heap used")
    for nodeid, used in HEAP_REPORT:
        terminalreporter.write_line(f"{used / 1024:7.1f} KiB of {HEAP_BYTES / 1024:.1f} KiB  {nodeid}")
