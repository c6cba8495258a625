"""Fixtures for the OCPP charge point tests (the shared ones live in tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from csms import CentralSystem  # noqa: E402
from httpserver import TestHTTPServer  # noqa: E402
from ocpp_scenarios import KEY  # noqa: E402
from wsserver import ChargePointChild, RawServer  # noqa: E402


@pytest.fixture
def cs(request):
    """The test central system (csms.CentralSystem) knowing the scenarios' station key; its
    heartbeat interval is the test module's CS_HEARTBEAT_S (default 30 s)."""
    server = CentralSystem(password=KEY, heartbeat_s=getattr(request.module, "CS_HEARTBEAT_S", 30))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http_server():
    server = TestHTTPServer()
    yield server
    server.close()


@pytest.fixture
def servers():
    """Raw WebSocket servers (wsserver.RawServer) made by the test, stopped after it."""
    started = []

    def make(script, **kw):
        s = RawServer(script, **kw).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def children():
    """Charge point child processes made by the test, killed after it (their output printed)."""
    made = []

    def make(*args, **kw):
        c = ChargePointChild(*args, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.kill()
        print("--- %s, last 3000 characters ---\n%s" % (c.dir.name, c.output()[-3000:]))
