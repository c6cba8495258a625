"""The ThingSpeak-compatible endpoints answer exactly in ThingSpeak's shapes: ``/update``
entry id or ``0``, ``update.json``, ``bulk_update.json``, ``feeds.json``,
``fields/<n>.json``, ``feeds/last.json``, private channels and the 15 s rule."""

from __future__ import annotations

import re
import urllib.parse

import pytest

from tests.server.conftest import http

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def ts_server(start_server):
    return start_server({"thingspeak.rate_limit": False})


def _channel(app, **extra) -> dict:
    status, channel = http(app, "POST", "/api/v1/thingspeak/channels",
                           {"name": "Bay 1", "description": "PicoCharge bay 1",
                            "field_names": ["Temperature", "Humidity", "Voltage"], **extra})
    assert status == 201
    return channel


def _form(values: dict) -> bytes:
    return urllib.parse.urlencode(values).encode()


def test_update_by_get_post_form_and_json_answers_the_new_entry_id(ts_server):
    channel = _channel(ts_server)
    key = channel["write_key"]
    assert http(ts_server, "GET", f"/update?api_key={key}&field1=21.5&field2=40") == (200, "1")
    assert http(ts_server, "POST", "/update", raw=_form({"api_key": key, "field1": "22"}),
                headers={"Content-Type": "application/x-www-form-urlencoded"}) == (200, "2")
    assert http(ts_server, "POST", "/update", {"api_key": key, "field3": 230.1}) == (200, "3")
    assert http(ts_server, "GET", "/update?field1=1", headers={"THINGSPEAKAPIKEY": key}) == (200, "4")


def test_update_with_a_bad_key_answers_zero(ts_server):
    _channel(ts_server)
    assert http(ts_server, "GET", "/update?api_key=WRONGKEY&field1=1") == (200, "0")
    assert http(ts_server, "GET", "/update?field1=1") == (200, "0")


def test_update_json_answers_the_created_entry_in_thingspeak_shape(ts_server):
    channel = _channel(ts_server)
    status, entry = http(ts_server, "GET", f"/update.json?api_key={channel['write_key']}"
                                           f"&field1=73&status=Charging&lat=45.5&long=9.2")
    assert status == 200
    assert list(entry) == ["channel_id", "created_at", "entry_id", "field1", "field2", "field3",
                           "field4", "field5", "field6", "field7", "field8", "latitude",
                           "longitude", "elevation", "status"]
    assert entry["channel_id"] == channel["id"] and entry["entry_id"] == 1
    assert entry["field1"] == "73" and entry["field2"] is None
    assert entry["status"] == "Charging" and entry["latitude"] == "45.5"
    assert ISO.match(entry["created_at"])


def test_feeds_json_has_the_channel_object_and_the_feeds(ts_server):
    channel = _channel(ts_server, public=True)
    key = channel["write_key"]
    for value in ("20", "21", "22"):
        http(ts_server, "GET", f"/update?api_key={key}&field1={value}&field2=50&status=ok")
    status, body = http(ts_server, "GET", f"/channels/{channel['id']}/feeds.json?results=2")
    assert status == 200 and list(body) == ["channel", "feeds"]
    ch = body["channel"]
    assert list(ch) == ["id", "name", "description", "latitude", "longitude", "field1", "field2",
                        "field3", "created_at", "updated_at", "last_entry_id"]
    assert (ch["id"], ch["name"], ch["field1"], ch["last_entry_id"]) == (
        channel["id"], "Bay 1", "Temperature", 3)
    assert ISO.match(ch["created_at"]) and ISO.match(ch["updated_at"])
    assert [list(f) for f in body["feeds"]] == [["created_at", "entry_id", "field1", "field2",
                                                 "field3"]] * 2
    assert [(f["entry_id"], f["field1"], f["field3"]) for f in body["feeds"]] == [
        (2, "21", None), (3, "22", None)]
    _, with_status = http(ts_server, "GET", f"/channels/{channel['id']}/feeds.json?status=true")
    assert with_status["feeds"][0]["status"] == "ok"


def test_field_feed_and_last_entry_shapes(ts_server):
    channel = _channel(ts_server, public=True)
    key = channel["write_key"]
    http(ts_server, "GET", f"/update?api_key={key}&field1=1&field2=2")
    http(ts_server, "GET", f"/update?api_key={key}&field1=3&field2=4")
    _, field = http(ts_server, "GET", f"/channels/{channel['id']}/fields/2.json")
    assert field["channel"]["id"] == channel["id"]
    assert [list(f) for f in field["feeds"]] == [["created_at", "entry_id", "field2"]] * 2
    assert [f["field2"] for f in field["feeds"]] == ["2", "4"]
    _, last = http(ts_server, "GET", f"/channels/{channel['id']}/feeds/last.json")
    assert list(last) == ["created_at", "entry_id", "field1", "field2", "field3"]
    assert (last["entry_id"], last["field1"]) == (2, "3")


def test_private_channel_needs_the_read_key(ts_server):
    channel = _channel(ts_server)
    http(ts_server, "GET", f"/update?api_key={channel['write_key']}&field1=1")
    assert http(ts_server, "GET", f"/channels/{channel['id']}/feeds.json") == (400, "-1")
    status, body = http(ts_server, "GET",
                        f"/channels/{channel['id']}/feeds.json?api_key={channel['read_key']}")
    assert status == 200 and body["feeds"][0]["field1"] == "1"
    assert http(ts_server, "GET", f"/channels/{channel['id']}/feeds/last.json?api_key=NOPE") == (400, "-1")


def test_bulk_update_json_inserts_absolute_and_relative_entries(ts_server):
    channel = _channel(ts_server, public=True)
    status, body = http(ts_server, "POST", f"/channels/{channel['id']}/bulk_update.json", {
        "write_api_key": channel["write_key"], "updates": [
            {"created_at": "2024-05-01 10:00:00", "field1": 20.5},
            {"created_at": "2024-05-01T10:00:15Z", "field1": 21},
        ]})
    assert (status, body) == (202, {"success": True})
    status, body = http(ts_server, "POST", f"/channels/{channel['id']}/bulk_update.json", {
        "write_api_key": channel["write_key"], "updates": [
            {"delta_t": 0, "field1": 1}, {"delta_t": 30, "field1": 2}]})
    assert status == 202
    _, feeds = http(ts_server, "GET", f"/channels/{channel['id']}/feeds.json")
    entries = feeds["feeds"]
    assert [e["created_at"] for e in entries[:2]] == ["2024-05-01T10:00:00Z", "2024-05-01T10:00:15Z"]
    assert [e["field1"] for e in entries] == ["20.5", "21", "1", "2"]
    from server.timeutil import parse_time
    assert parse_time(entries[3]["created_at"]) - parse_time(entries[2]["created_at"]) == 30


def test_bulk_update_refusals_use_thingspeak_error_shape(ts_server):
    channel = _channel(ts_server)
    status, body = http(ts_server, "POST", f"/channels/{channel['id']}/bulk_update.json",
                        {"write_api_key": "WRONG", "updates": [{"delta_t": 0, "field1": 1}]})
    assert status == 401
    assert body == {"status": "401", "error": {"error_code": "error_auth_required",
                                               "message": "Authorization Required",
                                               "details": "Authorization Required"}}
    status, _ = http(ts_server, "POST", f"/channels/{channel['id']}/bulk_update.json",
                     {"write_api_key": channel["write_key"],
                      "updates": [{"delta_t": 1, "field1": 1}] * 961})
    assert status == 413


def test_fifteen_second_rule_refuses_a_second_update_with_zero(start_server):
    app = start_server()  # rate limit on by default, like the free tier
    channel = _channel(app)
    key = channel["write_key"]
    assert http(app, "GET", f"/update?api_key={key}&field1=1") == (200, "1")
    assert http(app, "GET", f"/update?api_key={key}&field1=2") == (200, "0")
    status, body = http(app, "POST", f"/channels/{channel['id']}/bulk_update.json",
                        {"write_api_key": key, "updates": [{"delta_t": 0, "field1": 1}]})
    assert status == 429 and body["error"]["error_code"] == "error_too_many_requests"
