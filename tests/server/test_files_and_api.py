"""Firmware bundles served for UpdateFirmware, diagnostics uploads for GetDiagnostics,
idTag management, transaction filters and CSV, the OpenAPI document, JSON errors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import urllib.request

from ocpp.v16 import call

from server.files import build_bundle
from tests.server.conftest import (
    ahttp,
    basic_auth,
    charge_point,
    http,
    now_iso,
    register,
    run,
    station_key,
)


def test_firmware_bundle_is_listed_verified_and_served(server, tmp_path):
    source = tmp_path / "fw"
    (source / "lib").mkdir(parents=True)
    (source / "main.py").write_text("print('v2')\n")
    (source / "lib" / "ocpp.py").write_text("# ocpp\n")
    build_bundle(source, server.firmware.root / "v2.0.0", "2.0.0")
    status, bundles = http(server, "GET", "/api/v1/firmware")
    assert status == 200 and bundles[0]["name"] == "v2.0.0" and bundles[0]["valid"] is True
    manifest_url = bundles[0]["manifest_url"]
    manifest = json.loads(urllib.request.urlopen(manifest_url, timeout=10).read())
    for relative, entry in manifest["files"].items():
        url = manifest_url.rsplit("/", 1)[0] + "/" + relative
        assert hashlib.sha256(urllib.request.urlopen(url, timeout=10).read()).hexdigest() == entry["sha256"]
    (server.firmware.root / "v2.0.0" / "main.py").write_text("tampered\n")
    _, bundles = http(server, "GET", "/api/v1/firmware")
    assert bundles[0]["valid"] is False and "main.py: sha256 mismatch" in bundles[0]["problems"]
    assert http(server, "GET", "/firmware/v2.0.0/../../etc/passwd")[0] == 404


def test_update_firmware_operation_points_the_charge_point_at_a_bundle(server, tmp_path):
    register(server, "CP-OTA")
    build_bundle(tmp_path, server.firmware.root / "b1", "1.0.1")

    async def scenario():
        async with charge_point(server, "CP-OTA") as cp:
            _, bundles = await ahttp(server, "GET", "/api/v1/firmware")
            status, _ = await ahttp(server, "POST", "/api/v1/chargepoints/CP-OTA/UpdateFirmware",
                                    {"location": bundles[0]["manifest_url"], "retrieveDate": now_iso()})
            assert status == 200
            assert cp.received[-1][1]["location"] == bundles[0]["manifest_url"]

    run(scenario())


def test_diagnostics_upload_by_put_and_multipart_is_stored(server):
    register(server, "CP-DIAG")
    auth = basic_auth("CP-DIAG", station_key("CP-DIAG"))
    body = b"diagnostics log\n" * 100
    status, answer = http(server, "PUT", "/diagnostics/CP-DIAG/diag.log", raw=body, headers=auth)
    assert status == 201 and answer["sha256"] == hashlib.sha256(body).hexdigest()
    boundary = "XyZ"
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                 f"filename=\"second.log\"\r\nContent-Type: text/plain\r\n\r\n").encode() + body + \
        f"\r\n--{boundary}--\r\n".encode()
    status, answer = http(server, "POST", "/diagnostics/CP-DIAG", raw=multipart,
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                   **auth})
    assert status == 201 and answer["filename"] == "second.log" and answer["size"] == len(body)
    _, listing = http(server, "GET", "/api/v1/diagnostics?cp_id=CP-DIAG")
    assert sorted(f["filename"] for f in listing["files"]) == ["diag.log", "second.log"]


def test_id_tags_can_be_created_blocked_expired_and_deleted(server):
    assert http(server, "POST", "/api/v1/idtags", {"id_tag": "T1"})[0] == 201
    assert http(server, "POST", "/api/v1/idtags/T1/block")[1]["status"] == "Blocked"
    assert http(server, "POST", "/api/v1/idtags/T1/unblock")[1]["status"] == "Accepted"
    assert http(server, "POST", "/api/v1/idtags/T1/expire")[1]["effective_status"] == "Expired"
    assert http(server, "POST", "/api/v1/idtags", {"id_tag": "X" * 21})[0] == 400
    assert http(server, "DELETE", "/api/v1/idtags/T1")[0] == 204
    status, body = http(server, "GET", "/api/v1/idtags/T1")
    assert status == 404 and "T1" in body["reason"]


def test_transactions_filter_and_export_as_csv(server):
    register(server, "CP-CSV")

    async def scenario():
        async with charge_point(server, "CP-CSV") as cp:
            first = await cp.call(call.StartTransaction(connector_id=1, id_tag="A", meter_start=0,
                                                        timestamp=now_iso()))
            await cp.call(call.StopTransaction(meter_stop=900, timestamp=now_iso(),
                                               transaction_id=first.transaction_id))
            await cp.call(call.StartTransaction(connector_id=2, id_tag="B", meter_start=50,
                                                timestamp=now_iso()))

    run(scenario())
    _, completed = http(server, "GET", "/api/v1/transactions?state=completed")
    assert [(t["id_tag"], t["energy_wh"]) for t in completed] == [("A", 900)]
    _, by_tag = http(server, "GET", "/api/v1/transactions?id_tag=B")
    assert [t["active"] for t in by_tag] == [True]
    status, text = http(server, "GET", "/api/v1/transactions?format=csv&cp_id=CP-CSV")
    lines = text.strip().splitlines()
    assert lines[0] == ("id,cp_id,connector_id,id_tag,id_tag_status,start,stop,meter_start,"
                        "meter_stop,energy_wh,stop_reason,reservation_id")
    assert len(lines) == 3
    assert any(line.split(",")[3] == "A" and line.split(",")[9] == "900" for line in lines[1:])
    assert http(server, "GET", "/api/v1/transactions?state=sideways")[0] == 400


def test_a_station_chosen_id_tag_cannot_become_a_formula_in_the_csv(server):
    register(server, "CP-FORMULA")
    tags = ["=HYPERLINK(\"x\")", "+1+1", "-2+3", "@SUM(A1)", "plain"]

    async def scenario():
        async with charge_point(server, "CP-FORMULA") as cp:
            for n, tag in enumerate(tags, 1):
                await cp.call(call.StartTransaction(connector_id=1, id_tag=tag, meter_start=n,
                                                    timestamp=now_iso()))

    run(scenario())
    _, text = http(server, "GET", "/api/v1/transactions?format=csv&cp_id=CP-FORMULA")
    cells = [row["id_tag"] for row in csv.DictReader(io.StringIO(text))]
    assert sorted(cells) == sorted(["'" + t for t in tags[:4]] + ["plain"])
    _, rows = http(server, "GET", "/api/v1/transactions?cp_id=CP-FORMULA")
    assert sorted(r["id_tag"] for r in rows) == sorted(tags)  # the JSON keeps them as sent


def test_an_unexpected_error_answers_500_with_an_incident_id_and_no_internals(server, monkeypatch,
                                                                               caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("/secret/path/picocharge.db: SELECT * FROM operator_users")

    monkeypatch.setattr(server.store, "list_transactions", broken)
    status, body = http(server, "GET", "/api/v1/transactions")
    assert status == 500 and "secret" not in str(body) and "SELECT" not in str(body), body
    assert body["incident"] in body["reason"]
    assert body["incident"] in caplog.text and "/secret/path" in caplog.text  # the log has it


def test_openapi_document_lists_the_api_and_every_operation(server):
    status, doc = http(server, "GET", "/api/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    from server.ocpp.schemas import CENTRAL_SYSTEM_ACTIONS
    for action in CENTRAL_SYSTEM_ACTIONS:
        op = doc["paths"][f"/chargepoints/{{cp_id}}/{action}"]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"]["title"].startswith(action)
    for path in ("/chargepoints", "/transactions", "/idtags", "/events", "/stats"):
        assert path in doc["paths"]


def test_api_errors_are_json_with_a_reason(server):
    for method, path in (("GET", "/api/v1/chargepoints/NOPE"), ("GET", "/api/v1/nothing-here"),
                         ("DELETE", "/api/v1/stats")):
        status, body = http(server, method, path)
        assert status in (404, 405) and isinstance(body, dict) and body["reason"]
    status, body = http(server, "POST", "/api/v1/chargepoints", raw=b"not json",
                        headers={"Content-Type": "application/json"})
    assert status == 400 and "JSON" in body["reason"]
