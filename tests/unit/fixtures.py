"""Fixtures of the unit tests (a plugin of tests/conftest.py, not a conftest.py: tests/server
imports its helpers `from conftest import ...`, and a second module of that name here took
their place when both directories ran in one process).

Unit tests of the firmware's pure functions, on CPython, in the test process itself (no
board, no MicroPython process): `make test-fast` runs them with the other `unit` tests.

Every module here imports firmware modules with `tests.unit.fwimport.load`, which puts
`firmware/lib`, `tools/stubs` and `tools/stubs_cpython` on `sys.path` (run_script's order)
only while a firmware module imports, and keeps the firmware's module names out of
`sys.modules` otherwise (see fwimport's docstring): an xdist worker runs these next to
`tests/server`, and `config`, `storage` or `console` must stay theirs. The autouse fixture
below fails a test after which a firmware name is left visible to the rest of the process.

Fixtures: `fake_flash`, an in-memory stand-in for `storage.Flash` (the JSON/bytes calls
the firmware makes, with failures to inject).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.fwimport import leaked

UNIT_DIR = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _firmware_names_stay_private(request):
    if UNIT_DIR not in Path(str(request.node.path)).parents:
        yield
        return
    before = leaked()
    yield
    after = leaked()
    assert after <= before, f"firmware names leaked into the test process: {sorted(after - before)}"


class FakeFlash:
    """In-memory flash: `files` maps a name to bytes. `fail_writes` makes every write raise
    it (an OSError, e.g. storage.FlashFull); `reads`/`writes` count the calls."""

    def __init__(self, files: dict | None = None):
        self.files = dict(files or {})
        self.dirs: set[str] = set()
        self.fail_writes: OSError | None = None
        self.reads = 0
        self.writes = 0

    def makedirs(self, name):
        self.dirs.add(name.rstrip("/"))

    def exists(self, name):
        return name in self.files

    def listdir(self, name=""):
        prefix = name.rstrip("/") + "/" if name else ""
        return sorted(n[len(prefix):] for n in self.files
                      if n.startswith(prefix) and "/" not in n[len(prefix):])

    def read_bytes(self, name):
        self.reads += 1
        try:
            return self.files[name]
        except KeyError:
            raise OSError(2, "no such file: " + name) from None

    def read_text(self, name):
        return self.read_bytes(name).decode()

    def read_json(self, name):
        return json.loads(self.read_text(name))

    def write_bytes(self, name, data):
        if self.fail_writes is not None:
            raise self.fail_writes
        self.writes += 1
        self.files[name] = bytes(data)

    def write_text(self, name, text):
        self.write_bytes(name, text.encode())

    def write_json(self, name, obj):
        self.write_bytes(name, json.dumps(obj).encode())

    def remove(self, name):
        self.files.pop(name, None)

    def json(self, name):
        return json.loads(self.files[name])


@pytest.fixture
def fake_flash():
    return FakeFlash()

