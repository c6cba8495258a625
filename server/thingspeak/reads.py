"""Reading channel feeds with ThingSpeak's query parameters and in its formats.

Semantics follow ThingSpeak's documentation (Read Data / Read Field / Read Status) and its
open-source server: ``results`` (default 100, at most 8000) limits the raw entries read
first; then ``timescale`` (first value), ``sum``, ``average`` (divided by the number of
entries in the bucket: non-numbers count as 0) or ``median`` group them into buckets of
10, 15, 20, 30, 60, 240, 720, 1440 minutes or ``daily`` (empty buckets between the first
and the last one are answered with null fields, and grouped entries have no entry_id);
then ``min``/``max`` drop entries with a numeric field below/above the value; ``round``
formats numeric fields with that many decimals. ``timezone`` (an IANA name) or ``offset``
(hours) sets how times are shown and how ``start``/``end`` without an offset are read."""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from xml.etree import ElementTree
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.timeutil import in_sane_range

DEFAULT_RESULTS = 100
MAX_RESULTS = 8000
BUCKET_MINUTES = (10, 15, 20, 30, 60, 240, 720, 1440)
AGGREGATES = ("timescale", "sum", "average", "median")  # the first one given wins
MAX_ROUND = 20


class BadParameter(ValueError):
    """A read parameter ThingSpeak would not understand; answered 400 with ``details``."""


@dataclass
class ReadQuery:
    results: int | None = None
    since: float | None = None
    until: float | None = None
    tz: tzinfo = UTC
    status: bool = False
    location: bool = False
    metadata: bool = False
    minimum: float | None = None
    maximum: float | None = None
    round: int | None = None
    aggregate: str | None = None
    bucket: int | str | None = None  # minutes, or "daily"
    prepend: str = ""
    append: str = ""


def _flag(args, name: str) -> bool:
    return str(args.get(name, "")).strip().lower() == "true"


def _number(args, name: str) -> float | None:
    raw = args.get(name)
    if raw is None or str(raw).strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadParameter(f"{name} must be a number, not {raw!r}") from None
    if not math.isfinite(value):
        raise BadParameter(f"{name} must be a finite number")
    return value


def _whole(args, name: str, low: int, high: int | None = None) -> int | None:
    raw = args.get(name)
    if raw is None or str(raw).strip() == "":
        return None
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise BadParameter(f"{name} must be a whole number, not {raw!r}") from None
    if value < low or (high is not None and value > high):
        limit = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise BadParameter(f"{name} must be a whole number {limit}")
    return value


def _zone(args) -> tzinfo:
    name = args.get("timezone")
    if name:
        try:
            return ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            raise BadParameter(f"timezone {name!r} is not a time zone identifier "
                               "(e.g. Europe/Rome, America/New_York)") from None
    hours = _number(args, "offset")
    if hours is None or hours == 0:
        return UTC
    if not -12 <= hours <= 14:
        raise BadParameter("offset must be hours from -12 to 14")
    return timezone(timedelta(hours=hours))


def _moment(args, name: str, tz: tzinfo) -> float | None:
    raw = args.get(name)
    if raw is None or str(raw).strip() == "":
        return None
    text = str(raw).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadParameter(f"{name} must be a date like 2024-05-01 12:00:00, not {raw!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    epoch = moment.timestamp()
    if not in_sane_range(epoch):
        raise BadParameter(f"{name} must be between 1970 and 2099")
    return epoch


def _bucket(args, name: str) -> int | str | None:
    raw = args.get(name)
    if raw is None or str(raw).strip() == "":
        return None
    text = str(raw).strip().lower()
    if text == "daily":
        return "daily"
    if text.isdigit() and int(text) in BUCKET_MINUTES:
        return int(text)
    raise BadParameter(f"{name} must be one of {', '.join(map(str, BUCKET_MINUTES))} or daily")


def parse_query(args, now: float, default_days: float | None = None) -> ReadQuery:
    """The read parameters of a request (``args``: a mapping of strings)."""
    q = ReadQuery(tz=_zone(args), status=_flag(args, "status"),
                  location=_flag(args, "location"), metadata=_flag(args, "metadata"))
    q.results = _whole(args, "results", 0)
    if q.results is not None:
        q.results = min(q.results, MAX_RESULTS)
    days, minutes = _number(args, "days"), _number(args, "minutes")
    for name, value in (("days", days), ("minutes", minutes)):
        if value is not None and value < 0:
            raise BadParameter(f"{name} must not be negative")
    q.since = _moment(args, "start", q.tz)
    q.until = _moment(args, "end", q.tz)
    if q.since is None and (days is not None or minutes is not None):
        q.since = now - (days or 0) * 86400 - (minutes or 0) * 60
    elif q.since is None and q.results is None and default_days is not None:
        q.since = now - default_days * 86400
    if q.since is not None and q.until is not None and q.since > q.until:
        raise BadParameter("start must not be after end")
    if q.results is None and q.since is None and q.until is None:
        q.results = DEFAULT_RESULTS
    q.minimum, q.maximum = _number(args, "min"), _number(args, "max")
    q.round = _whole(args, "round", 0, MAX_ROUND)
    for name in AGGREGATES:
        bucket = _bucket(args, name)
        if bucket is not None and q.aggregate is None:
            q.aggregate, q.bucket = name, bucket
    q.prepend, q.append = str(args.get("prepend", "")), str(args.get("append", ""))
    return q


# Values ------------------------------------------------------------------------
def numeric(value) -> float | None:
    if value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _show(number: float, decimals: int | None) -> str:
    if decimals is not None:
        return f"{number:.{decimals}f}"
    return repr(float(number))


def round_value(value, decimals: int | None):
    number = numeric(value)
    if decimals is None or number is None:
        return value
    return _show(number, decimals)


# Buckets -------------------------------------------------------------------------
def _bucket_start(epoch: float, bucket: int | str, tz: tzinfo) -> float:
    local = datetime.fromtimestamp(epoch, tz)
    if bucket == "daily":
        return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    seconds = bucket * 60
    shift = local.utcoffset().total_seconds()
    return math.floor((epoch + shift) / seconds) * seconds - shift


def _next_bucket(start: float, bucket: int | str, tz: tzinfo) -> float:
    if bucket == "daily":
        day = datetime.fromtimestamp(start, tz).date() + timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
    return start + bucket * 60


def aggregate(rows: list[dict], names: tuple[str, ...], q: ReadQuery) -> list[dict]:
    """Group rows (oldest first) into q.bucket-sized buckets as q.aggregate says."""
    if not rows or q.aggregate is None:
        return rows
    groups: dict[float, list[dict]] = {}
    for row in rows:
        groups.setdefault(_bucket_start(row["created_at"], q.bucket, q.tz), []).append(row)
    out = []
    start, last = min(groups), max(groups)
    while start <= last:
        group = groups.get(start)
        entry = {"created_at": start, **{n: None for n in names}}
        if group and q.aggregate == "timescale":
            entry.update({k: v for k, v in group[0].items()
                          if k not in ("created_at", "entry_id")})
        elif group:
            for name in names:
                values = [numeric(r.get(name)) for r in group]
                numbers = [v for v in values if v is not None]
                if not numbers:
                    continue
                if q.aggregate == "sum":
                    result = math.fsum(numbers)
                elif q.aggregate == "average":
                    result = math.fsum(numbers) / len(group)
                else:
                    result = statistics.median(numbers)
                entry[name] = _show(result, q.round)
        out.append(entry)
        start = _next_bucket(start, q.bucket, q.tz)
    return out


def select(rows: list[dict], names: tuple[str, ...], q: ReadQuery) -> list[dict]:
    """min/max filtering, then rounding, of already aggregated rows."""
    out = []
    for row in rows:
        numbers = [numeric(row.get(n)) for n in names]
        numbers = [v for v in numbers if v is not None]
        if q.minimum is not None and any(v < q.minimum for v in numbers):
            continue
        if q.maximum is not None and any(v > q.maximum for v in numbers):
            continue
        if q.round is not None:
            row = dict(row, **{n: round_value(row.get(n), q.round) for n in names})
        out.append(row)
    return out


# Shapes --------------------------------------------------------------------------
def show_time(epoch: float | None, tz: tzinfo) -> str | None:
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, tz)
    if tz is UTC:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.isoformat(timespec="seconds")


def csv_time(epoch: float, tz: tzinfo) -> str:
    moment = datetime.fromtimestamp(epoch, tz)
    return moment.strftime("%Y-%m-%d %H:%M:%S ") + ("UTC" if tz is UTC else moment.strftime("%z"))


def columns(names: tuple[str, ...], q: ReadQuery, grouped: bool = False) -> list[str]:
    cols = ["created_at"] + ([] if grouped else ["entry_id"]) + list(names)
    if q.location:
        cols += ["latitude", "longitude", "elevation"]
    if q.status:
        cols.append("status")
    return cols


def feed_entry(row: dict, cols: list[str], tz: tzinfo) -> dict:
    return {c: show_time(row["created_at"], tz) if c == "created_at" else row.get(c)
            for c in cols}


def to_csv(rows: list[dict], cols: list[str], tz: tzinfo) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([csv_time(row["created_at"], tz) if c == "created_at"
                         else ("" if row.get(c) is None else row.get(c)) for c in cols])
    return out.getvalue()


def _xml_add(parent, key: str, value) -> None:
    element = ElementTree.SubElement(parent, key.replace("_", "-"))
    if value is None:
        element.set("nil", "true")
    elif isinstance(value, bool):
        element.set("type", "boolean")
        element.text = "true" if value else "false"
    elif isinstance(value, int):
        element.set("type", "integer")
        element.text = str(value)
    else:
        if key in ("created_at", "updated_at"):
            element.set("type", "dateTime")
        element.text = str(value)


def to_xml(channel: dict | None, feeds: list[dict] | None, single: dict | None = None) -> str:
    """ThingSpeak's XML: ``<channel>`` with dasherized members and ``<feeds type="array">``,
    or one ``<feed>``."""
    if single is not None:
        root = ElementTree.Element("feed")
        for key, value in single.items():
            _xml_add(root, key, value)
    else:
        root = ElementTree.Element("channel")
        for key, value in (channel or {}).items():
            _xml_add(root, key, value)
        array = ElementTree.SubElement(root, "feeds", type="array")
        for feed in feeds or []:
            element = ElementTree.SubElement(array, "feed")
            for key, value in feed.items():
                _xml_add(element, key, value)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(
        root, encoding="unicode") + "\n"
