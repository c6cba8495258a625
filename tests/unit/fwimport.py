"""The firmware's modules imported on CPython, for the unit tests of their pure functions,
without letting their names into the rest of the test process.

The firmware imports its siblings by plain name (`import clock`, `from storage import
FlashFull`), as the board does, so `firmware/lib`, `tools/stubs` and `tools/stubs_cpython`
must be on `sys.path` while it imports (the order `tests/harness.py` `run_script` gives a
CPython board). But those names (`config`, `storage`, `console`, `machine`, `micropython`,
...) must not shadow anything for the other tests that an xdist worker runs in the same
process (`tests/server` imports `server.config`). So they are importable only inside
`firmware_imports()`: on entering, the paths go to the front of `sys.path` and the firmware
modules imported so far go back into `sys.modules`; on leaving, the path is restored and
every firmware name is taken out of `sys.modules` again (kept here, in `_MODULES`, the
firmware's own module table). A module keeps its siblings in its globals, so its functions
work outside the block; only a function that imports at call time (code paging:
`ocpp_rpc.check` imports `ocpp_check`) has to be called inside one.

`hostcompat` is not imported: it would add MicroPython's `time.ticks_ms` and friends to the
process's `time` module for good. The pure functions tested here need none of it at import
time; a test of time-dependent code gives the module a fake clock (`FakeTicks`), which also
makes it deterministic.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "firmware" / "lib"
STUBS = ROOT / "tools" / "stubs"
STUBS_CPYTHON = ROOT / "tools" / "stubs_cpython"
PATHS = [str(LIB), str(STUBS), str(STUBS_CPYTHON)]  # run_script's order on CPython
NAMES = frozenset(p.stem for d in (LIB, STUBS, STUBS_CPYTHON) for p in d.glob("*.py"))

_MODULES: dict = {}  # plain name -> module: the firmware's sys.modules between the blocks


@contextlib.contextmanager
def firmware_imports():
    """Inside the block the firmware's modules import each other as on the board."""
    saved_path = list(sys.path)
    others = {name: sys.modules.pop(name) for name in NAMES if name in sys.modules}
    sys.modules.update(_MODULES)
    sys.path[:0] = PATHS
    try:
        yield
    finally:
        sys.path[:] = saved_path
        _MODULES.clear()
        for name in NAMES:
            module = sys.modules.pop(name, None)
            if module is not None:
                _MODULES[name] = module
        sys.modules.update(others)


def load(name: str):
    """The firmware module `name` (firmware/lib/<name>.py), imported with its siblings."""
    with firmware_imports():
        module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent in (LIB, STUBS, STUBS_CPYTHON), module
    return module


def leaked() -> set[str]:
    """Firmware modules in `sys.modules` and firmware directories on `sys.path`: what a
    block left behind if it were not closed (the unit tests check that it stays empty)."""
    dirs = (LIB, STUBS, STUBS_CPYTHON)
    out = {p for p in PATHS if p in sys.path}
    for name in NAMES:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file and Path(file).resolve().parent in dirs:
            out.add(name)
    return out


TICKS_PERIOD = 1 << 30  # MicroPython's small-int ticks wrap here


class FakeTicks:
    """A `time` module for firmware code under test: ticks that move only when told, with
    MicroPython's wrap-around (`ticks_diff` is the port's arithmetic)."""

    def __init__(self, start_ms: int = 0):
        self.now_us = start_ms * 1000

    def advance_ms(self, ms: float) -> None:
        self.now_us += int(ms * 1000)

    def advance_us(self, us: int) -> None:
        self.now_us += us

    def ticks_ms(self) -> int:
        return (self.now_us // 1000) % TICKS_PERIOD

    def ticks_us(self) -> int:
        return self.now_us % TICKS_PERIOD

    @staticmethod
    def ticks_diff(end: int, start: int) -> int:
        half = TICKS_PERIOD // 2
        return ((end - start + half) % TICKS_PERIOD) - half

    @staticmethod
    def ticks_add(ticks: int, delta: int) -> int:
        return (ticks + delta) % TICKS_PERIOD

    def sleep_us(self, us: int) -> None:
        self.advance_us(us)

    def sleep_ms(self, ms: int) -> None:
        self.advance_ms(ms)
