"""Wall-clock time for the firmware: UTC seconds, ISO 8601 text, and synchronisation.

The board's RTC starts at 2021-01-01 after power-up; NTP or the central system's
`currentTime` set it. `Clock` keeps the offset between what it was told and `time.time()`,
sets the RTC so other code sees the same time, and says whether it has been synchronised.
OCPP timestamps are written as `YYYY-MM-DDTHH:MM:SSZ`.
"""

import time

MIN_VALID = 1609459200  # 2021-01-01: anything before means "never set"


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """(year, month, day) of a day count since 1970-01-01."""
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return (y + (m <= 2), m, d)


def iso(ts):
    """UTC ISO 8601 text of unix seconds: 2026-11-26T19:03:39Z."""
    ts = int(ts)
    days, secs = divmod(ts, 86400)
    y, m, d = civil_from_days(days)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, m, d, secs // 3600, secs // 60 % 60, secs % 60)


def digits(text, i, n):
    """The value of the `n` ASCII digits at `text[i]`; ValueError if any is no digit."""
    v = 0
    for k in range(i, i + n):
        c = ord(text[k]) - 48
        if not 0 <= c <= 9:
            raise ValueError("not a digit in %r" % (text,))
        v = v * 10 + c
    return v


def month_days(y, m):
    """Days of month `m` (1-12) of year `y` (Gregorian leap years)."""
    if m == 2:
        return 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
    return 30 + ((m + (m >> 3)) & 1)  # 31 for Jan Mar May Jul Aug Oct Dec, else 30


def parse_iso(text):
    """Unix seconds of an RFC 3339 date-time; ValueError for anything else.

    `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, ASCII digits only in every field.
    Also taken: a lowercase `t` or a space for `T`, a lowercase `z`, and no offset at all
    (read as UTC). The day must exist in its month, the hour is 00-23, the minute 00-59,
    the second 00-60 (60: a leap second, read as the next second); an offset's hours are
    00-23 and its minutes 00-59. The result is an int of whole seconds, the fraction
    dropped: a Pico W's float is single precision, 128 s apart at today's unix seconds.
    """
    if (not isinstance(text, str) or len(text) < 19 or text[4] != "-" or text[7] != "-"
            or text[10] not in "Tt " or text[13] != ":" or text[16] != ":"):
        raise ValueError("not an ISO 8601 date-time: %r" % (text,))
    y = digits(text, 0, 4)
    mo = digits(text, 5, 2)
    d = digits(text, 8, 2)
    h = digits(text, 11, 2)
    mi = digits(text, 14, 2)
    s = digits(text, 17, 2)
    if not (1 <= mo <= 12 and 1 <= d <= month_days(y, mo) and h < 24 and mi < 60 and s <= 60):
        raise ValueError("date-time out of range: %r" % (text,))
    i = 19
    n = len(text)
    if i < n and text[i] == ".":
        i += 1
        while i < n and "0" <= text[i] <= "9":
            i += 1
        if i == 20:
            raise ValueError("no digits in the fraction of %r" % (text,))
    offset = 0
    if i == n or (i + 1 == n and text[i] in "Zz"):
        pass
    elif i + 6 == n and text[i] in "+-" and text[i + 3] == ":":
        oh = digits(text, i + 1, 2)
        om = digits(text, i + 4, 2)
        if oh > 23 or om > 59:
            raise ValueError("time zone offset out of range: %r" % (text,))
        offset = (oh * 3600 + om * 60) * (1 if text[i] == "+" else -1)
    else:
        raise ValueError("bad time zone in %r" % (text,))
    return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset


class Clock:
    def __init__(self, rtc=None):
        self.rtc = rtc
        # whole seconds: on a Pico W a float is single precision, 128 s apart at today's
        # unix times, so a float offset would round every time stamp by up to a minute
        self.offset = 0
        self.synced = time.time() >= MIN_VALID and rtc is None
        self.source = "host" if self.synced else None

    def now(self):
        """UTC unix seconds (an int on a board: its time.time() is whole seconds)."""
        return time.time() + self.offset

    def iso(self, ts=None):
        return iso(self.now() if ts is None else ts)

    def set(self, unix_ts, source):
        """Adopt `unix_ts` as the current time (from NTP or the central system)."""
        if unix_ts < MIN_VALID:
            raise ValueError("refusing a time before 2021")
        if self.rtc is not None:
            days, secs = divmod(int(unix_ts), 86400)
            y, m, d = civil_from_days(days)
            weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
            try:
                self.rtc.datetime((y, m, d, weekday, secs // 3600, secs // 60 % 60, secs % 60, 0))
            except Exception:
                pass  # the offset below keeps the time right even without an RTC
        self.offset = round(unix_ts - time.time())
        self.synced = True
        self.source = source
