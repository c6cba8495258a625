"""Fixtures for the station scenarios (helpers live in stationkit.py)."""

import pytest
from stationkit import Broker, ThingSpeakRecorder


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def thingspeak_recorder():
    rec = ThingSpeakRecorder()
    yield rec
    rec.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        import stationkit

        for board in stationkit.BOOTED:
            rep.sections.append((f"board console ({board.runtime})", board.console.text[-4000:]))


@pytest.fixture(autouse=True)
def _forget_boards():
    import stationkit

    stationkit.BOOTED.clear()
    yield
