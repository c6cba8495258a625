"""firmware/lib/clock.py, its pure part: `parse_iso` (an OCPP 1.6-J date-time, RFC 3339
`YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, to unix seconds; ValueError for
anything else), `month_days`, and `iso`, the text the firmware writes."""

from __future__ import annotations

import calendar

import pytest

from tests.unit.fwimport import load

pytestmark = pytest.mark.unit

clock = load("clock")

T = 1795687200  # 2026-11-26T10:00:00Z


@pytest.mark.parametrize("text,value", [
    ("2026-11-26T10:00:00Z", T),
    ("2026-11-26t10:00:00z", T),             # lowercase t and z
    ("2026-11-26 10:00:00Z", T),             # a space for the T (RFC 3339 section 5.6 note)
    ("2026-11-26T10:00:00", T),              # no offset: read as UTC
    ("2026-11-26T10:00:00+00:00", T),
    ("2026-11-26T10:00:00-00:00", T),        # RFC 3339: UTC, local offset unknown
    ("2026-11-26T10:00:00+01:00", T - 3600),
    ("2026-11-26T10:00:00-05:30", T + 5 * 3600 + 1800),
    ("2026-11-26T10:00:00+23:59", T - 23 * 3600 - 59 * 60),
    ("2026-11-26T10:00:00-23:59", T + 23 * 3600 + 59 * 60),
    ("2026-11-26T19:03:39Z", 1795719819),
    ("1970-01-01T00:00:00Z", 0),
    ("2021-01-01T00:00:00Z", clock.MIN_VALID),
    ("2024-02-29T00:00:00Z", 1709164800),     # a leap year
    ("2000-02-29T00:00:00Z", 951782400),      # divisible by 400: a leap year
    ("2026-12-31T23:59:59Z", 1798761599),
    ("2026-12-31T23:59:60Z", 1798761600),     # a leap second: the next second
])
def test_a_date_time_is_read_as_its_unix_seconds(text, value):
    got = clock.parse_iso(text)
    assert got == value
    assert type(got) is int


@pytest.mark.parametrize("text", [
    "2026-11-26T10:00:00.0Z", "2026-11-26T10:00:00.123Z", "2026-11-26T10:00:00.999999999Z",
    "2026-11-26T10:00:00.5", "2026-11-26T11:00:00.75+01:00",
])
def test_a_fraction_is_dropped_to_whole_seconds(text):
    # an int: a Pico W's single-precision float could not hold unix seconds to the second
    got = clock.parse_iso(text)
    assert got == T and type(got) is int


@pytest.mark.parametrize("ts", [0, clock.MIN_VALID, T, 1795719819, 1709164799, 4102444799])
def test_what_iso_writes_parse_iso_reads_back(ts):
    assert clock.parse_iso(clock.iso(ts)) == ts


@pytest.mark.parametrize("year", [1900, 2000, 2024, 2025, 2026, 2100, 2400])
def test_month_days_is_the_gregorian_calendars(year):
    assert [clock.month_days(year, m) for m in range(1, 13)] == [
        calendar.monthrange(year, m)[1] for m in range(1, 13)]


@pytest.mark.parametrize("year", [2024, 2026])
@pytest.mark.parametrize("month", range(1, 13))
def test_the_last_day_of_each_month_is_taken_and_the_next_refused(year, month):
    last = calendar.monthrange(year, month)[1]
    text = "%04d-%02d-%02dT12:00:00Z"
    assert clock.parse_iso(text % (year, month, last)) > 0
    with pytest.raises(ValueError):
        clock.parse_iso(text % (year, month, last + 1))


@pytest.mark.parametrize("text", [
    # days that do not exist
    "2026-02-29T00:00:00Z", "2026-02-30T00:00:00Z", "2100-02-29T00:00:00Z",
    "1900-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-06-31T00:00:00Z",
    "2026-09-31T00:00:00Z", "2026-11-31T00:00:00Z", "2026-11-00T00:00:00Z",
    "2026-00-10T00:00:00Z", "2026-13-01T00:00:00Z",
    # times out of range
    "2026-11-26T24:00:00Z", "2026-11-26T10:60:00Z", "2026-11-26T10:00:61Z",
    "2026-11-26T99:00:00Z",
    # offsets out of range or malformed
    "2026-11-26T10:00:00+24:00", "2026-11-26T10:00:00+25:00", "2026-11-26T10:00:00-24:00",
    "2026-11-26T10:00:00+01:60", "2026-11-26T10:00:00+01:99", "2026-11-26T10:00:00+0100",
    "2026-11-26T10:00:00+1:00", "2026-11-26T10:00:00+01:0", "2026-11-26T10:00:00+01",
    "2026-11-26T10:00:00+01:00Z", "2026-11-26T10:00:00Z+01:00", "2026-11-26T10:00:00+-1:00",
    "2026-11-26T10:00:00++1:00", "2026-11-26T10:00:00+ 1:00", "2026-11-26T10:00:00+01:-1",
    "2026-11-26T10:00:00*01:00", "2026-11-26T10:00:00 CET", "2026-11-26T10:00:00UTC",
    # wrong separators
    "2026-11-26T10-00-00Z", "2026-11-26T10:00-00Z", "2026-11-26T10-00:00Z",
    "2026/11/26T10:00:00Z", "2026-11/26T10:00:00Z", "2026-11-26X10:00:00Z",
    "2026-11-26_10:00:00Z", "2026-11-26T10.00.00Z",
    # signs, spaces and other characters for digits
    "2026-+1-26T10:00:00Z", "2026-11-+6T10:00:00Z", "2026-11-26T+1:00:00Z",
    "2026-11-26T-1:00:00Z", "2026-11-26T 1:00:00Z", "2026-11-26T10: 0:00Z",
    "2026-11-26T10:00: 0Z", "+026-11-26T10:00:00Z", " 026-11-26T10:00:00Z",
    "-026-11-26T10:00:00Z", "2026- 1-26T10:00:00Z", "2026-1_-26T10:00:00Z",
    "YYYY-11-26T10:00:00Z", "2026-1a-26T10:00:00Z", "0x26-11-26T10:00:00Z",
    "\uff12\uff10\uff12\uff16-11-26T10:00:00Z",  # fullwidth digits: int() would take them
    "2026-11-\u0662\u0666T10:00:00Z",            # Arabic-Indic digits: int() would take them
    # fractions
    "2026-11-26T10:00:00.Z", "2026-11-26T10:00:00.", "2026-11-26T10:00:00,5Z",
    "2026-11-26T10:00:00.5.5Z", "2026-11-26T10:00:00.-5Z", "2026-11-26T10:00:00. 5Z",
    # too short, too long, other shapes
    "", "now", "2026-11-26", "2026-11-26T10:00", "2026-11-26T10:00:0Z", "26.11.2026 10:00:00",
    "2026-11-26T10:00:00ZZ", "2026-11-26T10:00:00Z ", " 2026-11-26T10:00:00Z",
    "2026-11-26T10:00:00Z\n", "2026-11-26T10:00:00\n", "20261126T100000Z",
    "12026-11-26T10:00:00Z", "2026-011-26T10:00:00Z",
])
def test_a_malformed_or_impossible_date_time_is_a_value_error(text):
    with pytest.raises(ValueError):
        clock.parse_iso(text)


@pytest.mark.parametrize("value", [None, 1795687200, b"2026-11-26T10:00:00Z", ["2026"]])
def test_what_is_no_string_is_a_value_error(value):
    with pytest.raises(ValueError):
        clock.parse_iso(value)


def test_iso_writes_utc_with_a_z():
    assert clock.iso(T) == "2026-11-26T10:00:00Z"
    assert clock.iso(T + 0.9) == "2026-11-26T10:00:00Z"
    assert clock.iso(0) == "1970-01-01T00:00:00Z"
    assert clock.iso(1709164800) == "2024-02-29T00:00:00Z"


class BoardTime:
    """A Pico W's `time`: time.time() is whole seconds since boot's idea of the epoch."""

    def __init__(self, now: int):
        self.now = now

    def time(self) -> int:
        return self.now


def test_the_clock_keeps_whole_seconds_so_a_single_precision_board_loses_none(monkeypatch):
    # on a Pico W a float is single precision: 1 796 000 000 s rounds to a multiple of 128
    board = BoardTime(1000)
    monkeypatch.setattr(clock, "time", board)
    c = clock.Clock()
    assert c.now() == 1000 and isinstance(c.now(), int)
    c.set(1_796_000_045.4, "central system")
    board.now += 7
    assert c.now() == 1_796_000_052 and isinstance(c.now(), int)
    assert c.iso() == "2026-11-30T00:54:12Z"
