"""Fixtures for the OCPP charge point tests (the shared ones live in tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from httpserver import TestHTTPServer  # noqa: E402


@pytest.fixture
def http_server():
    server = TestHTTPServer()
    yield server
    server.close()
