"""firmware/lib/ocpp_link.py: a TLS handshake that finds no hole in the heap (ENOMEM).

Right after a firmware download at a Pico W's heap the OCPP session's handshake met
ENOMEM three times in 2.5 s in a fresh-clone CI run (the per-second objects of other tasks
split the hole the download left, for a moment). The link collects, pauses 0.5, 1, 2 s and
tries again, up to HEAP_TRIES handshakes, without counting them as failures of the central
system (no backoff growth); past that, it is a failed connect like any other.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.fwimport import FakeTicks, load

pytestmark = pytest.mark.unit

ocpp_link = load("ocpp_link")


class Done(BaseException):
    """Ends the link's loop (not an Exception: the loop catches those)."""


class Board:
    cp_id = "CP-HEAP"
    wifi = None
    flash = None

    def __init__(self):
        self.ocpp_conf = {"url": "wss://cs.example/ocpp", "ca_file": "ca.der"}
        self.cfg = {"AuthorizationKey": "k" * 16, "ReconnectMaxInterval": 60}
        self.lines = []

    def log(self, line):
        self.lines.append(line)


class Handshakes:
    """A WebSocket whose connects fail with the given errors, then end the test."""

    def __init__(self, errors):
        self.errors = list(errors)
        self.tries = 0

    async def connect(self, *args, **kwargs):
        self.tries += 1
        if not self.errors:
            raise Done
        raise self.errors.pop(0)


class Pauses:
    """asyncio for the module: sleeps recorded, not waited."""

    def __init__(self):
        self.slept_ms = []
        self.Event = asyncio.Event
        self.Lock = asyncio.Lock

    async def sleep_ms(self, ms):
        self.slept_ms.append(ms)

    async def sleep(self, s):
        self.slept_ms.append(int(s * 1000))


def run_link(monkeypatch, errors):
    pauses = Pauses()
    monkeypatch.setattr(ocpp_link, "time", FakeTicks(start_ms=1000))
    monkeypatch.setattr(ocpp_link, "asyncio", pauses)
    board = Board()
    link = ocpp_link.Link(board)
    link.ws_obj = ws = Handshakes(errors)
    with pytest.raises(Done):
        asyncio.run(link.run())
    return board.lines, pauses.slept_ms, ws.tries


def enomem():
    return OSError(12)


def test_a_handshake_short_of_heap_is_tried_again_after_growing_pauses_not_as_a_failure(monkeypatch):
    lines, slept, tries = run_link(monkeypatch, [enomem() for _ in range(ocpp_link.HEAP_TRIES - 1)])
    assert tries == ocpp_link.HEAP_TRIES
    assert slept == [500, 1000, 2000]
    assert [line for line in lines if "no heap" in line] == [
        "ocpp: no heap for the TLS session (OSError 12): collecting, trying it again in %.1fs" % s
        for s in (0.5, 1.0, 2.0)]
    assert not [line for line in lines if "connect failed" in line]


def test_past_its_tries_a_heap_shortage_is_a_failed_connect_and_the_count_starts_again(monkeypatch):
    errors = [enomem() for _ in range(ocpp_link.HEAP_TRIES)] + [enomem()]
    lines, slept, tries = run_link(monkeypatch, errors)
    failed = [line for line in lines if "connect failed" in line]
    assert len(failed) == 1 and "OSError(12" in failed[0]
    # after the backoff a new connection starts with its own tries
    assert lines[-1].startswith("ocpp: no heap") and lines[-1].endswith("in 0.5s")
    assert tries == ocpp_link.HEAP_TRIES + 2


def test_other_connect_errors_go_to_the_backoff_at_once(monkeypatch):
    lines, slept, tries = run_link(monkeypatch, [OSError(111)])
    assert [line for line in lines if "no heap" in line] == []
    assert len([line for line in lines if "connect failed (OSError(111" in line]) == 1
    assert tries == 2
