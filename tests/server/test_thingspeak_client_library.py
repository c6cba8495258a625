"""The published ``thingspeak`` client library (PyPI), unchanged and pointed at this server
with its ``server_url`` argument, writes and reads a channel as it would on ThingSpeak."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import pytest
import requests
import thingspeak

from tests.server.conftest import http


@pytest.fixture
def library_channels(start_server):
    app = start_server({"thingspeak.rate_limit": False})
    status, channel = http(app, "POST", "/api/v1/thingspeak/channels",
                           {"name": "Bay 7", "field_names": ["Temperature", "Humidity"]})
    assert status == 201  # private: reads need the read key
    url = f"http://127.0.0.1:{app.ports['http']}"
    writer = thingspeak.Channel(channel["id"], api_key=channel["write_key"], server_url=url,
                                timeout=30)
    reader = thingspeak.Channel(channel["id"], api_key=channel["read_key"], server_url=url,
                                timeout=30)
    return channel, url, writer, reader


def test_library_writes_then_reads_feeds_field_last_entry_and_status(library_channels):
    channel, url, writer, reader = library_channels
    first = json.loads(writer.update({"field1": 21.5, "field2": 40, "status": "Charging"}))
    assert (first["channel_id"], first["entry_id"], first["field1"], first["status"]) == (
        channel["id"], 1, "21.5", "Charging")
    assert json.loads(writer.update({"field1": 22.25}))["entry_id"] == 2

    feeds = json.loads(reader.get({"results": 2}))
    assert feeds["channel"]["name"] == "Bay 7"
    assert [(f["entry_id"], f["field1"], f["field2"]) for f in feeds["feeds"]] == [
        (1, "21.5", "40"), (2, "22.25", None)]

    field = json.loads(reader.get_field(1, {"results": 1, "round": 1}))
    assert [(f["entry_id"], f["field1"]) for f in field["feeds"]] == [(2, "22.2")]

    last = json.loads(reader.get_field_last(2))  # the newest entry that has field2
    assert (last["entry_id"], last["field2"]) == (1, "40")

    statuses = json.loads(reader.get({"status": "true"}))
    assert [f.get("status") for f in statuses["feeds"]] == ["Charging", None]

    view = json.loads(reader.view())
    assert (view["id"], view["name"], view["last_entry_id"]) == (channel["id"], "Bay 7", 2)
    age = json.loads(reader.get_last_data_age(1))
    assert age["last_data_age_units"] == "s" and 0 <= int(age["last_data_age"]) < 60

    xml_reader = thingspeak.Channel(channel["id"], api_key=channel["read_key"], fmt="xml",
                                    server_url=url, timeout=30)
    root = ElementTree.fromstring(xml_reader.get({"results": 1}))
    assert root.find("feeds").find("feed").findtext("field1") == "22.25"


def test_library_without_the_read_key_gets_thingspeaks_refusal(library_channels):
    channel, url, _, _ = library_channels
    stranger = thingspeak.Channel(channel["id"], server_url=url, timeout=30)
    with pytest.raises(requests.HTTPError) as refused:
        stranger.get()
    assert refused.value.response.status_code == 400 and refused.value.response.text == "-1"
