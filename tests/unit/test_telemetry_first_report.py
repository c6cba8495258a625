"""firmware/lib/telemetry.py: the first report waits for the meter's first reading.

On a loaded host (or a board in an interrupt storm) the meter's first passes can be
spoiled, and a report taken at once went out without `v`, `a` and `w`: a consumer reads
that as "no meter". The first report waits for `Station.has_measured()`, at most
FIRST_REPORT_WAIT_MS; after that a report without them means the meter has nothing.
"""

from __future__ import annotations

import pytest

from tests.unit.fwimport import FakeTicks, load

pytestmark = pytest.mark.unit

telemetry = load("telemetry")


class Station:
    def __init__(self):
        self.measured = False

    def has_measured(self):
        return self.measured


class Link:
    name = "ocpp"

    def paused(self):
        return False


@pytest.fixture
def clock(monkeypatch):
    ticks = FakeTicks(start_ms=5000)
    monkeypatch.setattr(telemetry, "time", ticks)
    return ticks


def make(station):
    config = {"cp_id": "CP-1", "mqtt": {"via": "ocpp"}, "intervals": {"telemetry_s": 10}}
    return telemetry.Telemetry(config, station, clock=None, status_fn=lambda: "Available",
                               link=Link())


def test_the_first_report_waits_for_the_meter_then_goes_at_once(clock):
    station = Station()
    t = make(station)
    assert t._first_reading_pending(clock.ticks_ms())
    clock.advance_ms(800)
    assert t._first_reading_pending(clock.ticks_ms())
    station.measured = True
    assert not t._first_reading_pending(clock.ticks_ms())


def test_a_meter_that_never_reads_holds_the_first_report_ten_seconds_only(clock):
    t = make(Station())
    clock.advance_ms(telemetry.FIRST_REPORT_WAIT_MS - 1)
    assert t._first_reading_pending(clock.ticks_ms())
    clock.advance_ms(1)
    assert not t._first_reading_pending(clock.ticks_ms())


def test_only_the_first_report_waits(clock):
    t = make(Station())
    t.seq = 1  # a report was taken: later ones keep their interval whatever the meter does
    assert not t._first_reading_pending(clock.ticks_ms())
