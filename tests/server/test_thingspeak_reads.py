"""Reading the ThingSpeak-compatible API as a ThingSpeak client would: every documented read
parameter with its real effect on the answer, the other read endpoints (CSV, XML, a
field's last value, status, channel, data age, entry by id), bulk_update.csv, CORS on the
reads only, and clear ThingSpeak-style errors for bad input."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from xml.etree import ElementTree

import pytest

from tests.server.conftest import http

T0 = "2024-05-01T10:00:00Z"  # 1714557600


@pytest.fixture
def ts_server(start_server):
    return start_server({"thingspeak.rate_limit": False})


def _channel(app, **extra) -> dict:
    status, channel = http(app, "POST", "/api/v1/thingspeak/channels",
                           {"name": "Bay 1", "description": "PicoCharge bay 1", "public": True,
                            "field_names": ["Temperature", "Humidity", "Voltage"], **extra})
    assert status == 201
    return channel


def _bulk(app, channel, updates):
    status, body = http(app, "POST", f"/channels/{channel['id']}/bulk_update.json",
                        {"write_api_key": channel["write_key"], "updates": updates})
    assert (status, body) == (202, {"success": True})


def _at(seconds: float) -> str:
    """2024-05-01 10:00:00 UTC plus seconds, as ISO 8601."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1714557600 + seconds))


def _get(app, path: str, **params):
    query = urllib.parse.urlencode(params)
    return http(app, "GET", f"{path}?{query}" if query else path)


def _raw(app, path: str, headers: dict | None = None):
    """(status, headers, text) without the JSON parsing of http()."""
    request = urllib.request.Request(f"http://127.0.0.1:{app.ports['http']}{path}",
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


@pytest.fixture
def series(ts_server):
    """Five entries one minute apart from 2024-05-01 10:00 UTC, field1 = 10, 20, ... 50."""
    channel = _channel(ts_server)
    _bulk(ts_server, channel, [{"created_at": _at(60 * i), "field1": str(10 * (i + 1)),
                                "field2": f"{i}.12345", "status": f"s{i}",
                                "latitude": "45.5", "longitude": "9.2", "elevation": "120"}
                               for i in range(5)])
    return ts_server, channel


def _feeds(app, channel, **params) -> list[dict]:
    status, body = _get(app, f"/channels/{channel['id']}/feeds.json", **params)
    assert status == 200, body
    return body["feeds"]


# results, days, minutes, start, end -------------------------------------------------
def test_results_answers_the_newest_n_entries(series):
    app, channel = series
    assert [f["entry_id"] for f in _feeds(app, channel, results=2)] == [4, 5]
    assert [f["field1"] for f in _feeds(app, channel, results=0)] == []
    assert len(_feeds(app, channel, results=99999)) == 5


def test_results_is_capped_at_8000(ts_server):
    channel = _channel(ts_server)
    for batch in range(9):  # 8640 entries in bulk updates of 960
        _bulk(ts_server, channel, [{"created_at": 1700000000 + batch * 1000 + i, "field1": "1"}
                                   for i in range(960)])
    feeds = _feeds(ts_server, channel, results=9000)
    assert len(feeds) == 8000 and feeds[-1]["entry_id"] == 8640 and feeds[0]["entry_id"] == 641
    assert len(_feeds(ts_server, channel)) == 100  # the default


def test_days_keeps_entries_of_the_last_n_days(ts_server):
    channel = _channel(ts_server)
    now = time.time()
    _bulk(ts_server, channel, [{"created_at": now - 3 * 86400, "field1": "old"},
                               {"created_at": now - 3600, "field1": "new"}])
    assert [f["field1"] for f in _feeds(ts_server, channel, days=1)] == ["new"]
    assert [f["field1"] for f in _feeds(ts_server, channel, days=4)] == ["old", "new"]


def test_minutes_keeps_entries_of_the_last_n_minutes(ts_server):
    channel = _channel(ts_server)
    now = time.time()
    _bulk(ts_server, channel, [{"created_at": now - 1800, "field1": "half an hour ago"},
                               {"created_at": now - 120, "field1": "two minutes ago"}])
    assert [f["field1"] for f in _feeds(ts_server, channel, minutes=10)] == ["two minutes ago"]
    assert len(_feeds(ts_server, channel, minutes=40)) == 2


def test_start_and_end_bound_the_entries_in_mysql_or_iso_format(series):
    app, channel = series
    feeds = _feeds(app, channel, start="2024-05-01 10:01:00", end="2024-05-01 10:03:00")
    assert [f["field1"] for f in feeds] == ["20", "30", "40"]
    assert [f["entry_id"] for f in _feeds(app, channel, start="2024-05-01T10:03:30Z")] == [5]
    assert [f["entry_id"] for f in _feeds(app, channel, end="2024-05-01 10:00:59")] == [1]


# timezone, offset ------------------------------------------------------------------
def test_timezone_shows_times_in_that_zone_and_reads_start_in_it(series):
    app, channel = series
    feeds = _feeds(app, channel, timezone="America/New_York", start="2024-05-01 06:03:00")
    assert [(f["created_at"], f["entry_id"]) for f in feeds] == [
        ("2024-05-01T06:03:00-04:00", 4), ("2024-05-01T06:04:00-04:00", 5)]
    _, body = _get(app, f"/channels/{channel['id']}/feeds.json", timezone="Asia/Tokyo")
    assert body["channel"]["created_at"].endswith("+09:00")


def test_offset_shows_times_that_many_hours_from_utc(series):
    app, channel = series
    assert _feeds(app, channel, offset=2, results=1)[0]["created_at"] == "2024-05-01T12:04:00+02:00"
    assert _feeds(app, channel, offset=-5.5, results=1)[0]["created_at"] == (
        "2024-05-01T04:34:00-05:30")
    assert _feeds(app, channel, results=1)[0]["created_at"] == "2024-05-01T10:04:00Z"


# status, metadata, location ----------------------------------------------------------
def test_status_true_adds_each_entrys_status(series):
    app, channel = series
    assert "status" not in _feeds(app, channel)[0]
    assert [f["status"] for f in _feeds(app, channel, status="true")] == [
        "s0", "s1", "s2", "s3", "s4"]


def test_metadata_true_adds_the_channels_metadata(series):
    app, channel = series
    _, plain = _get(app, f"/channels/{channel['id']}/feeds.json")
    _, with_metadata = _get(app, f"/channels/{channel['id']}/feeds.json", metadata="true")
    assert "metadata" not in plain["channel"]
    assert with_metadata["channel"]["metadata"] == ""
    assert list(with_metadata["channel"])[:4] == ["id", "name", "description", "metadata"]


def test_location_true_adds_latitude_longitude_and_elevation(series):
    app, channel = series
    assert "latitude" not in _feeds(app, channel)[0]
    feed = _feeds(app, channel, location="true")[0]
    assert (feed["latitude"], feed["longitude"], feed["elevation"]) == ("45.5", "9.2", "120")


# min, max, round -------------------------------------------------------------------
def test_min_and_max_drop_entries_with_a_value_outside(series):
    app, channel = series
    path = f"/channels/{channel['id']}/fields/1.json"
    assert [f["field1"] for f in _get(app, path, min=25)[1]["feeds"]] == ["30", "40", "50"]
    assert [f["field1"] for f in _get(app, path, max=25)[1]["feeds"]] == ["10", "20"]
    assert [f["field1"] for f in _get(app, path, min=20, max=40)[1]["feeds"]] == [
        "20", "30", "40"]
    # on the whole feed every numeric field must be in range (field2 is 0.12345 .. 4.12345)
    assert [f["entry_id"] for f in _feeds(app, channel, min=2)] == [3, 4, 5]


def test_round_formats_numeric_values_with_that_many_decimals(ts_server):
    channel = _channel(ts_server)
    _bulk(ts_server, channel, [{"created_at": T0, "field1": "3.14159", "field2": "on",
                                "field3": "7"}])
    feed = _feeds(ts_server, channel, round=2)[0]
    assert (feed["field1"], feed["field2"], feed["field3"]) == ("3.14", "on", "7.00")
    assert _feeds(ts_server, channel, round=0)[0]["field1"] == "3"
    assert _feeds(ts_server, channel)[0]["field1"] == "3.14159"


# timescale, sum, average, median ------------------------------------------------------
@pytest.fixture
def buckets(ts_server):
    """field1 at 10:00 (1), 10:05 (2), 10:07 ("n/a"), 10:12 (4), 10:31 (8)."""
    channel = _channel(ts_server)
    _bulk(ts_server, channel, [{"created_at": _at(60 * m), "field1": v} for m, v in (
        (0, "1"), (5, "2"), (7, "n/a"), (12, "4"), (31, "8"))])
    return ts_server, channel


def _grouped(app, channel, **params):
    feeds = _get(app, f"/channels/{channel['id']}/fields/1.json", **params)[1]["feeds"]
    assert all("entry_id" not in f for f in feeds)
    return [(f["created_at"][11:16], f["field1"]) for f in feeds]


def test_timescale_takes_the_first_value_of_each_bucket(buckets):
    app, channel = buckets
    assert _grouped(app, channel, timescale=10) == [
        ("10:00", "1"), ("10:10", "4"), ("10:20", None), ("10:30", "8")]
    assert _grouped(app, channel, timescale=60) == [("10:00", "1")]


def test_sum_adds_the_numbers_of_each_bucket(buckets):
    app, channel = buckets
    assert _grouped(app, channel, sum=10) == [
        ("10:00", "3.0"), ("10:10", "4.0"), ("10:20", None), ("10:30", "8.0")]
    assert _grouped(app, channel, sum=60, round=1) == [("10:00", "15.0")]


def test_average_divides_by_the_entries_of_each_bucket(buckets):
    app, channel = buckets
    # ThingSpeak: a value that is not a number counts as 0 (3 entries in 10:00-10:10)
    assert _grouped(app, channel, average=10) == [
        ("10:00", "1.0"), ("10:10", "4.0"), ("10:20", None), ("10:30", "8.0")]
    assert _grouped(app, channel, average=30, round=2) == [("10:00", "1.75"), ("10:30", "8.00")]


def test_median_takes_the_middle_number_of_each_bucket(buckets):
    app, channel = buckets
    assert _grouped(app, channel, median=30) == [("10:00", "2.0"), ("10:30", "8.0")]
    assert _grouped(app, channel, median=60) == [("10:00", "3.0")]


def test_daily_buckets_are_calendar_days_in_the_requested_zone(ts_server):
    channel = _channel(ts_server)
    _bulk(ts_server, channel, [{"created_at": "2024-05-01T23:30:00Z", "field1": "1"},
                               {"created_at": "2024-05-02T00:30:00Z", "field1": "2"},
                               {"created_at": "2024-05-02T05:00:00Z", "field1": "4"}])
    path = f"/channels/{channel['id']}/fields/1.json"
    feeds = _get(ts_server, path, sum="daily")[1]["feeds"]
    assert [(f["created_at"], f["field1"]) for f in feeds] == [
        ("2024-05-01T00:00:00Z", "1.0"), ("2024-05-02T00:00:00Z", "6.0")]
    feeds = _get(ts_server, path, sum="daily", timezone="Europe/Rome")[1]["feeds"]
    assert [(f["created_at"], f["field1"]) for f in feeds] == [
        ("2024-05-02T00:00:00+02:00", "7.0")]


def test_bucket_sizes_other_than_thingspeaks_are_refused_clearly(buckets):
    app, channel = buckets
    status, body = _get(app, f"/channels/{channel['id']}/feeds.json", average=7)
    assert status == 400
    assert body["error"]["error_code"] == "error_bad_request"
    assert "10, 15, 20, 30, 60, 240, 720, 1440 or daily" in body["error"]["details"]


# Other formats and endpoints --------------------------------------------------------------
def test_feeds_csv_has_a_header_row_and_thingspeaks_times(series):
    app, channel = series
    status, headers, text = _raw(app, f"/channels/{channel['id']}/feeds.csv?results=2&status=true")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert text.splitlines() == [
        "created_at,entry_id,field1,field2,field3,status",
        "2024-05-01 10:03:00 UTC,4,40,3.12345,,s3",
        "2024-05-01 10:04:00 UTC,5,50,4.12345,,s4"]
    _, _, text = _raw(app, f"/channels/{channel['id']}/fields/1.csv?results=1&offset=-4")
    assert text.splitlines() == ["created_at,entry_id,field1", "2024-05-01 06:04:00 -0400,5,50"]


def test_feeds_xml_has_the_channel_and_its_feeds(series):
    app, channel = series
    status, headers, text = _raw(app, f"/channels/{channel['id']}/feeds.xml?results=2")
    assert status == 200 and "xml" in headers["Content-Type"]
    root = ElementTree.fromstring(text)
    assert root.tag == "channel" and root.findtext("name") == "Bay 1"
    assert root.find("id").get("type") == "integer"
    feeds = root.find("feeds").findall("feed")
    assert [(f.findtext("entry-id"), f.findtext("field1")) for f in feeds] == [
        ("4", "40"), ("5", "50")]
    assert feeds[0].find("field3").get("nil") == "true"


def test_a_fields_last_value_skips_entries_without_it(ts_server):
    channel = _channel(ts_server)
    _bulk(ts_server, channel, [{"created_at": _at(0), "field2": "41.5"},
                               {"created_at": _at(60), "field1": "22"}])
    status, body = _get(ts_server, f"/channels/{channel['id']}/fields/2/last.json")
    assert (status, body) == (200, {"created_at": _at(0), "entry_id": 1, "field2": "41.5"})
    assert _get(ts_server, f"/channels/{channel['id']}/fields/2/last.txt") == (200, "41.5")
    assert _get(ts_server, f"/channels/{channel['id']}/fields/2/last.txt",
                prepend="RH=", append="%", round=0) == (200, "RH=42%")
    assert _get(ts_server, f"/channels/{channel['id']}/fields/5/last.txt") == (200, "-1")


def test_status_json_answers_the_last_days_status_updates(ts_server):
    channel = _channel(ts_server)
    now = time.time()
    _bulk(ts_server, channel, [{"created_at": now - 3 * 86400, "status": "old"},
                               {"created_at": now - 600, "status": "Charging", "field1": "1"}])
    status, body = _get(ts_server, f"/channels/{channel['id']}/status.json")
    assert status == 200
    assert body["channel"] == {"name": "Bay 1"}  # and the location, when the channel has one
    assert [(f["entry_id"], f["status"]) for f in body["feeds"]] == [(2, "Charging")]
    assert list(body["feeds"][0]) == ["created_at", "entry_id", "status"]
    _, body = _get(ts_server, f"/channels/{channel['id']}/status.json", days=5)
    assert [f["status"] for f in body["feeds"]] == ["old", "Charging"]


def test_channel_json_describes_the_channel_without_its_keys(series):
    app, channel = series
    status, headers, text = _raw(app, f"/channels/{channel['id']}.json")
    assert status == 200
    assert channel["write_key"] not in text and channel["read_key"] not in text
    _, body = http(app, "GET", f"/channels/{channel['id']}.json")
    assert (body["id"], body["name"], body["description"], body["last_entry_id"]) == (
        channel["id"], "Bay 1", "PicoCharge bay 1", 5)
    assert (body["field1"], body["field3"], body["public_flag"]) == ("Temperature", "Voltage", True)


def test_last_data_age_counts_seconds_since_the_newest_entry(ts_server):
    channel = _channel(ts_server)
    assert _get(ts_server, f"/channels/{channel['id']}/feeds/last_data_age.txt") == (200, "-1")
    _bulk(ts_server, channel, [{"created_at": time.time() - 100, "field1": "1"}])
    status, body = _get(ts_server, f"/channels/{channel['id']}/feeds/last_data_age.json")
    assert status == 200 and body["last_data_age_units"] == "s"
    assert 100 <= int(body["last_data_age"]) <= 130
    _, text = _get(ts_server, f"/channels/{channel['id']}/fields/1/last_data_age.txt")
    assert 100 <= int(text) <= 130


def test_an_entry_is_read_by_its_id(series):
    app, channel = series
    status, body = _get(app, f"/channels/{channel['id']}/feeds/3.json", status="true")
    assert status == 200
    assert body == {"created_at": _at(120), "entry_id": 3, "field1": "30", "field2": "2.12345",
                    "field3": None, "status": "s2"}
    assert _get(app, f"/channels/{channel['id']}/feeds/99.json") == (200, "-1")


def test_bulk_update_csv_writes_absolute_and_relative_entries(ts_server):
    channel = _channel(ts_server)
    path = f"/channels/{channel['id']}/bulk_update.csv"
    form = {"write_api_key": channel["write_key"], "time_format": "absolute",
            "updates": "2024-05-01 10:00:00,21.5,40,,,,,,,45.5,9.2,120,ok|"
                       "2024-05-01T10:00:15Z,22,,230"}
    status, body = http(ts_server, "POST", path, raw=urllib.parse.urlencode(form).encode(),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body) == (202, {"success": True})
    form.update(time_format="relative", updates="0,1|30,2")
    status, _ = http(ts_server, "POST", path, raw=urllib.parse.urlencode(form).encode(),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 202
    feeds = _feeds(ts_server, channel, status="true", location="true")
    assert [(f["created_at"][:19] if i < 2 else None, f["field1"], f["field2"], f["field3"])
            for i, f in enumerate(feeds)] == [
        ("2024-05-01T10:00:00", "21.5", "40", None), ("2024-05-01T10:00:15", "22", None, "230"),
        (None, "1", None, None), (None, "2", None, None)]
    assert (feeds[0]["latitude"], feeds[0]["elevation"], feeds[0]["status"]) == ("45.5", "120", "ok")
    form.update(time_format="sometimes")
    status, body = http(ts_server, "POST", path, raw=urllib.parse.urlencode(form).encode(),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "time_format" in body["error"]["details"]
    form.update(time_format="absolute", write_api_key="WRONG")
    status, body = http(ts_server, "POST", path, raw=urllib.parse.urlencode(form).encode(),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401 and body["error"]["error_code"] == "error_auth_required"


# Access, CORS, bad input ------------------------------------------------------------------
READS = ("feeds.json", "feeds.csv", "feeds.xml", "fields/1.json", "fields/1/last.json",
         "fields/1/last.txt", "feeds/last.json", "feeds/1.json", "feeds/last_data_age.json",
         "status.json")


def test_private_channel_reads_need_the_read_key(ts_server):
    channel = _channel(ts_server, public=False)
    _bulk(ts_server, channel, [{"created_at": time.time() - 10, "field1": "7", "status": "x"}])
    cid = channel["id"]
    for path in (*(f"/channels/{cid}/{p}" for p in READS), f"/channels/{cid}.json"):
        assert _raw(ts_server, path)[::2] == (400, "-1"), path
        assert _raw(ts_server, f"{path}?api_key=NOPE")[::2] == (400, "-1"), path
        status, _, text = _raw(ts_server, f"{path}?api_key={channel['read_key']}")
        assert status == 200 and text != "-1", path
    assert _get(ts_server, f"/channels/{cid}/fields/1/last.txt",
                api_key=channel["read_key"]) == (200, "7")


def test_reads_allow_any_origin_but_writes_and_operator_routes_do_not(series):
    app, channel = series
    for path in READS:
        _, headers, _ = _raw(app, f"/channels/{channel['id']}/{path}")
        assert headers["Access-Control-Allow-Origin"] == "*", path
    _, headers, _ = _raw(app, f"/channels/{channel['id']}.json")
    assert headers["Access-Control-Allow-Origin"] == "*"
    _, headers, _ = _raw(app, f"/update?api_key={channel['write_key']}&field1=1")
    assert "Access-Control-Allow-Origin" not in headers
    request = urllib.request.Request(
        f"http://127.0.0.1:{app.ports['http']}/channels/{channel['id']}/bulk_update.json",
        data=b'{"write_api_key": "x", "updates": []}', method="POST",
        headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert "Access-Control-Allow-Origin" not in refused.value.headers
    _, headers, _ = _raw(app, "/api/v1/thingspeak/channels")
    assert "Access-Control-Allow-Origin" not in headers


@pytest.mark.parametrize("param,value,words", [
    ("results", "ten", "results must be a whole number"),
    ("results", "-1", "results must be a whole number"),
    ("days", "-2", "days must not be negative"),
    ("minutes", "soon", "minutes must be a number"),
    ("start", "yesterday", "start must be a date"),
    ("end", "2024-13-45", "end must be a date"),
    ("timezone", "Mars/Olympus", "not a time zone"),
    ("offset", "99", "offset must be hours"),
    ("min", "nan", "min must be a finite number"),
    ("max", "x", "max must be a number"),
    ("round", "-3", "round must be a whole number"),
    ("timescale", "5", "timescale must be one of"),
    ("sum", "weekly", "sum must be one of"),
    ("median", "0", "median must be one of"),
])
def test_bad_read_parameters_get_a_thingspeak_error_naming_them(series, param, value, words):
    app, channel = series
    for path in ("feeds.json", "fields/1.json", "fields/1/last.json", "status.json"):
        status, body = _get(app, f"/channels/{channel['id']}/{path}", **{param: value})
        assert status == 400, (path, body)
        assert body["status"] == "400" and body["error"]["error_code"] == "error_bad_request"
        assert words in body["error"]["details"], (path, body)


def test_start_after_end_is_refused(series):
    app, channel = series
    status, body = _get(app, f"/channels/{channel['id']}/feeds.json",
                        start="2024-05-02 00:00:00", end="2024-05-01 00:00:00")
    assert status == 400 and "start must not be after end" in body["error"]["details"]
