"""Bad input stops at the REST boundary: refused with a 400 (413 for an oversized body) that
names the field, nothing of it stored, and what was there before still reads and saves."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
from ocpp.v16 import call

from tests.server.conftest import basic_auth, charge_point, http, register, run, station_key


def _persisted_chargepoint(app, cp_id: str) -> dict | None:
    app.store.sync()
    return next((r for r in app.store.load_chargepoints() if r["id"] == cp_id), None)


def _refused(status: int, body, field: str) -> None:
    assert status == 400, body
    assert body["field"] == field and body["in"] in ("body", "query", "path"), body
    assert field in body["reason"], body


def test_description_that_is_not_a_string_is_refused_and_later_saves_still_reach_the_store(server):
    status, body = http(server, "POST", "/api/v1/chargepoints",
                        {"id": "CP-DESC", "description": {"nested": "object"}})
    _refused(status, body, "description")
    assert http(server, "GET", "/api/v1/chargepoints/CP-DESC")[0] == 404
    assert _persisted_chargepoint(server, "CP-DESC") is None

    register(server, "CP-DESC")
    status, body = http(server, "PATCH", "/api/v1/chargepoints/CP-DESC", {"description": [1, 2]})
    _refused(status, body, "description")
    status, body = http(server, "PATCH", "/api/v1/chargepoints/CP-DESC",
                        {"description": "bay 3", "registration": "Pending"})
    assert status == 200 and body["description"] == "bay 3"
    record = _persisted_chargepoint(server, "CP-DESC")
    assert record["description"] == "bay 3" and record["registration"] == "Pending"


def too_large(app, method: str, path: str, raw: bytes) -> bool:
    """Refused for its size. The server answers 413 on the Content-Length, before reading
    the body, and closes: a client still sending it may find the connection cut before it
    reads the 413 (Expect: 100-continue avoids that). Nothing else counts."""
    try:
        status, body = http(app, method, path, raw=raw, headers={"Content-Type": "application/json"})
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, (BrokenPipeError, ConnectionResetError))
    except (BrokenPipeError, ConnectionResetError):
        return True
    return status == 413


def test_description_longer_than_500_characters_is_refused_and_a_5_mb_body_is_too_large(server):
    status, body = http(server, "POST", "/api/v1/chargepoints",
                        {"id": "CP-LONG", "description": "x" * 501})
    _refused(status, body, "description")
    assert "500" in body["reason"] and len(json.dumps(body)) < 1000  # the value is not echoed
    assert too_large(server, "POST", "/api/v1/chargepoints",
                     json.dumps({"id": "CP-HUGE", "description": "x" * 5_000_000}).encode())
    assert _answer_to_headers_only(server, "/api/v1/chargepoints", 5_000_000 + 40).startswith(
        b"HTTP/1.1 413")
    status, _ = http(server, "POST", "/api/v1/chargepoints",
                     {"id": "CP-LONG", "description": "y" * 500})
    assert status == 201
    status, fleet = http(server, "GET", "/api/v1/chargepoints")
    assert status == 200 and [c["id"] for c in fleet] == ["CP-LONG"]


def test_id_tag_note_that_is_not_a_string_is_refused_and_tags_still_list(server):
    status, body = http(server, "POST", "/api/v1/idtags", {"id_tag": "NOTE", "note": {"a": 1}})
    _refused(status, body, "note")
    assert http(server, "GET", "/api/v1/idtags/NOTE")[0] == 404
    assert http(server, "POST", "/api/v1/idtags", {"id_tag": "NOTE", "note": "fleet card"})[0] == 201
    status, body = http(server, "PATCH", "/api/v1/idtags/NOTE", {"note": ["x"]})
    _refused(status, body, "note")
    status, tags = http(server, "GET", "/api/v1/idtags")
    assert status == 200 and [(t["id_tag"], t["note"]) for t in tags] == [("NOTE", "fleet card")]


def test_id_tag_longer_than_ocpp_allows_is_refused(server):
    status, body = http(server, "POST", "/api/v1/idtags", {"id_tag": "T" * 21})
    _refused(status, body, "id_tag")
    status, body = http(server, "GET", "/api/v1/idtags/" + "T" * 21)
    _refused(status, body, "id_tag")


def test_expiry_outside_a_sane_time_range_is_refused_and_authorize_keeps_answering(server):
    register(server, "CP-AUTH")
    for expiry in (1e300, -1, "9999-12-31T23:59:59Z", "not a time", {"when": "soon"}):
        status, body = http(server, "POST", "/api/v1/idtags", {"id_tag": "FAR", "expiry": expiry})
        _refused(status, body, "expiry")
    status, body = http(server, "POST", "/api/v1/idtags", raw=b'{"id_tag": "FAR", "expiry": NaN}',
                        headers={"Content-Type": "application/json"})
    assert status == 400 and "NaN" in body["reason"], body
    assert http(server, "POST", "/api/v1/idtags",
                {"id_tag": "NEAR", "expiry": "2099-12-31T00:00:00Z"})[0] == 201
    status, tags = http(server, "GET", "/api/v1/idtags")
    assert status == 200 and [t["id_tag"] for t in tags] == ["NEAR"]

    async def authorize():
        async with charge_point(server, "CP-AUTH") as cp:
            far = await cp.call(call.Authorize(id_tag="FAR"))
            near = await cp.call(call.Authorize(id_tag="NEAR"))
            return far.id_tag_info["status"], near.id_tag_info["status"]

    assert run(authorize()) == ("Invalid", "Accepted")


def test_json_nested_100000_deep_is_refused_with_400(server):
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in ("/api/v1/chargepoints", "/api/v1/idtags"):
        status, body = http(server, "POST", path, raw=deep,
                            headers={"Content-Type": "application/json"})
        assert status == 400 and "nested" in body["reason"], body
    # Just past the documented depth is refused too; a body an operator writes is not.
    nested = {"id_tag": "DEEP"}
    for _ in range(32):
        nested = {"n": nested}
    status, body = http(server, "POST", "/api/v1/idtags", nested)
    assert status == 400 and "nested" in body["reason"], body
    assert http(server, "POST", "/api/v1/idtags", {"id_tag": "FLAT"})[0] == 201


def test_transaction_id_beyond_32_bits_is_refused_and_lookups_still_work(server):
    register(server, "CP-TX")
    status, body = http(server, "GET", "/api/v1/transactions/" + "1" + "0" * 23)
    _refused(status, body, "tx_id")
    status, body = http(server, "GET",
                        "/api/v1/chargepoints/CP-TX/meter-values?transaction_id=" + "9" * 23)
    _refused(status, body, "transaction_id")
    status, body = http(server, "GET", "/api/v1/transactions/not-a-number")
    _refused(status, body, "tx_id")
    assert http(server, "GET", "/api/v1/transactions/2147483647")[0] == 404
    assert http(server, "GET", "/api/v1/transactions")[0] == 200


def test_query_parameters_outside_their_documented_range_are_refused(server):
    for query, field in (("limit=100001", "limit"), ("limit=-1", "limit"),
                         ("state=sideways", "state"), ("format=xml", "format"),
                         ("since=yesterday", "since"), ("id_tag=" + "x" * 21, "id_tag"),
                         ("state=active&state=sideways", "state")):  # one value per name
        status, body = http(server, "GET", f"/api/v1/transactions?{query}")
        _refused(status, body, field)
    assert http(server, "GET", "/api/v1/transactions?limit=100000&since=2024-01-01")[0] == 200


def test_a_value_ending_in_a_newline_does_not_pass_a_pattern_that_ends_the_value(server):
    # JSON Schema reads `$` as the end of the value; Python's re also matches it before a
    # final newline, which let "CP-1\n" through `^[^/\x00-\x1f]+$`
    status, body = http(server, "GET", "/api/v1/diagnostics?cp_id=CP-1%0A")
    _refused(status, body, "cp_id")
    assert body["reason"].endswith("$"), body  # the documented pattern, not the engine's
    status, body = http(server, "POST", "/api/v1/chargepoints", {"id": "CP-NL\n"})
    _refused(status, body, "id")
    status, body = http(server, "POST", "/api/v1/idtags", {"id_tag": "TAG", "note": "fine\n"})
    assert status == 201, body  # a pattern-free text may still hold a newline
    assert http(server, "GET", "/api/v1/diagnostics?cp_id=CP-1")[0] == 200


def test_unknown_body_fields_and_wrong_content_type_are_refused(server):
    status, body = http(server, "POST", "/api/v1/chargepoints", {"id": "CP-X", "descripton": "typo"})
    _refused(status, body, "descripton")
    status, body = http(server, "POST", "/api/v1/chargepoints", raw=b'{"id": "CP-X"}',
                        headers={"Content-Type": "text/plain"})
    assert status == 400 and "Content-Type" in body["reason"], body
    assert http(server, "GET", "/api/v1/chargepoints/CP-X")[0] == 404


def test_thingspeak_channel_and_bridge_input_is_checked(server):
    status, body = http(server, "POST", "/api/v1/thingspeak/channels",
                        {"name": "bay", "description": {"x": 1}})
    _refused(status, body, "description")
    status, body = http(server, "POST", "/api/v1/thingspeak/channels",
                        {"name": "bay", "id": 10**23})
    _refused(status, body, "id")
    status, body = http(server, "PUT", "/api/v1/chargepoints/CP-B/thingspeak",
                        {"url": "ftp://example", "channel": 1, "write_key": "KEY"})
    _refused(status, body, "url")
    assert http(server, "GET", "/api/v1/thingspeak/channels")[1] == []
    assert http(server, "GET", "/api/v1/thingspeak/bridges")[1] == []


def test_thingspeak_compatible_writes_refuse_deep_json_and_far_times(server):
    status, channel = http(server, "POST", "/api/v1/thingspeak/channels", {"name": "bay"})
    assert status == 201
    key = channel["write_key"]
    deep = b'{"api_key": "' + key.encode() + b'", "field1": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    status, answer = http(server, "POST", "/update.json", raw=deep,
                          headers={"Content-Type": "application/json"})
    assert (status, answer) == (200, "0")  # ThingSpeak's "not written"
    status, body = http(server, "POST", f"/channels/{channel['id']}/bulk_update.json", raw=deep,
                        headers={"Content-Type": "application/json"})
    assert status == 400, body
    for created_at in (1e300, -5, "9999-01-01 00:00:00"):
        status, answer = http(server, "POST", "/update.json",
                              {"api_key": key, "field1": "1", "created_at": created_at})
        assert (status, answer) == (200, "0")
    status, body = http(server, "POST", f"/channels/{channel['id']}/bulk_update.json",
                        {"write_api_key": key, "updates": [{"delta_t": 0, "field1": "1"},
                                                           {"delta_t": 1e300, "field1": "2"}]})
    assert status == 400, body
    status, feeds = http(server, "GET", f"/channels/{channel['id']}/feeds.json?api_key={key}")
    assert status == 200 and feeds["feeds"] == [], feeds
    assert http(server, "POST", "/update", {"api_key": key, "field1": "7"}) == (200, "1")


def test_operation_location_that_is_not_an_absolute_uri_is_refused_before_the_station(server):
    register(server, "CP-FW")
    for location in ("", "firmware.bin", "http://host/ with space"):
        status, body = http(server, "POST", "/api/v1/chargepoints/CP-FW/UpdateFirmware",
                            {"location": location, "retrieveDate": "2030-01-01T00:00:00Z"})
        _refused(status, body, "location")
        assert body["code"] == "FormationViolation" or body["code"].endswith("Violation"), body
    status, body = http(server, "POST", "/api/v1/chargepoints/CP-FW/UpdateFirmware",
                        {"location": "https://fw.example/pico.json",
                         "retrieveDate": "2030-01-01T00:00:00Z"})
    assert status == 409, body  # valid, and the station is simply not connected


def test_json_bodies_are_capped_at_1_mib_while_diagnostics_uploads_keep_their_own_cap(server):
    two_mib = b"x" * (2 * 1024 * 1024)
    assert too_large(server, "POST", "/api/v1/idtags",
                     b'{"id_tag": "BIG", "note": "' + two_mib + b'"}')
    assert too_large(server, "POST", "/update.json", b'{"field1": "' + two_mib + b'"}')
    register(server, "CP-DIAG")  # uploads need the station's own credentials
    status, answer = http(server, "PUT", "/diagnostics/CP-DIAG/big.log", raw=two_mib,
                          headers=basic_auth("CP-DIAG", station_key("CP-DIAG")))
    assert status == 201 and answer["size"] == len(two_mib), answer


def _answer_to_headers_only(app, path: str, length: int, wait: float = 10) -> bytes:
    """Send only the request line and headers of a body of `length` bytes; what comes back
    before any of the body is sent (b"" if the server waits for it)."""
    sock = socket.create_connection(("127.0.0.1", app.ports["http"]), timeout=10)
    try:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode())
        sock.settimeout(wait)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b""
    finally:
        sock.close()


def test_a_body_over_the_routes_limit_is_refused_before_it_is_read(server):
    """An anonymous client announcing 50 MB to a JSON route is answered 413 at once (the
    server does not read and spool it first); an upload route allows its own cap."""
    answer = _answer_to_headers_only(server, "/api/v1/chargepoints", 50 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    answer = _answer_to_headers_only(server, "/login", server.config.http["max_json_bytes"] + 2)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # within an upload's cap, the server waits for the body (then checks the credentials)
    assert _answer_to_headers_only(server, "/diagnostics/CP-X/diag.txt", 2 * 1024 * 1024,
                                   wait=2) == b""


def test_station_routes_are_rate_limited_per_address(start_server):
    """The routes stations use without an operator login (ThingSpeak API, firmware files,
    diagnostics uploads) skip the operator limiter; per address they have their own."""
    app = start_server({"http.station_rate_per_address": 0.5, "http.station_burst_per_address": 3})
    answers = [http(app, "GET", "/update?api_key=NOKEY&field1=1", token=None)[0] for _ in range(5)]
    assert answers[:3] == [200] * 3 and answers[3:] == [429, 429], answers
    with pytest.raises(urllib.error.HTTPError) as refused:  # the budget is the address's
        urllib.request.urlopen(f"http://127.0.0.1:{app.ports['http']}/firmware/none/x.mpy",
                               timeout=10)
    assert refused.value.code == 429 and int(refused.value.headers["Retry-After"]) >= 1
