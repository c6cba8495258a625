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


def parse_iso(text):
    """Unix seconds of an ISO 8601 date-time (fraction and offset allowed); ValueError."""
    if not isinstance(text, str) or len(text) < 19 or text[4] != "-" or text[10] not in "Tt ":
        raise ValueError("not an ISO 8601 date-time: %r" % (text,))
    try:
        y = int(text[0:4])
        mo = int(text[5:7])
        d = int(text[8:10])
        h = int(text[11:13])
        mi = int(text[14:16])
        s = int(text[17:19])
    except ValueError:
        raise ValueError("not an ISO 8601 date-time: %r" % (text,))
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        raise ValueError("date-time out of range: %r" % (text,))
    rest = text[19:]
    frac = 0.0
    if rest.startswith("."):
        i = 1
        while i < len(rest) and rest[i].isdigit():
            i += 1
        frac = float("0" + rest[:i]) if i > 1 else 0.0
        rest = rest[i:]
    offset = 0
    if rest in ("", "Z", "z"):
        pass
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
        offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
    else:
        raise ValueError("bad time zone in %r" % (text,))
    return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s + frac - offset


class Clock:
    def __init__(self, rtc=None):
        self.rtc = rtc
        self.offset = 0.0
        self.synced = time.time() >= MIN_VALID and rtc is None
        self.source = "host" if self.synced else None

    def now(self):
        """UTC unix seconds (float)."""
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
        self.offset = unix_ts - time.time()
        self.synced = True
        self.source = source
