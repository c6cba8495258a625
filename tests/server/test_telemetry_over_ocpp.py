"""Telemetry inside the OCPP session: a DataTransfer with vendorId "PicoCharge" and
messageId "telemetry" whose data is the MQTT telemetry report goes through the MQTT
ingest's own pipeline (size, JSON, schema, seq accounting, the ThingSpeak bridge), is
stored once as a telemetry row of the authenticated station, and is answered Accepted only
after that row is committed; an invalid report is Rejected with the reason and counted,
and a store that cannot commit gets a CALLERROR (try again), never Accepted."""

from __future__ import annotations

import json
import sqlite3
import time

from tests.server.conftest import ahttp, exchange, http, raw_socket, register, run
from tests.waiting import wait_until

DT = "DataTransfer"


def report(seq: int, **extra) -> str:
    fields = {"ts": int(time.time()), "seq": seq, "v": 230.1, "a": 15.9, "wh": 12.5,
              "st": "Charging", "heap": 40000, "up": 60 + seq}
    fields.update(extra)
    return json.dumps(fields, separators=(",", ":"))


def transfer(uid: str, data, message_id: str = "telemetry", vendor: str = "PicoCharge") -> list:
    payload = {"vendorId": vendor, "messageId": message_id}
    if data is not None:
        payload["data"] = data
    return [2, uid, DT, payload]


def rows(app, cp_id: str) -> list[dict]:
    _, series = http(app, "GET", f"/api/v1/chargepoints/{cp_id}/telemetry")
    return series


def data_transfer_rows(app) -> int:
    with sqlite3.connect(app.config.database_path) as db:
        return db.execute("SELECT count(*) FROM data_transfers").fetchone()[0]


def test_a_report_is_stored_as_telemetry_and_answered_accepted_once_committed(server):
    register(server, "CP-TEL")
    fed = []
    bridge_feed = server.ingest.on_telemetry
    server.ingest.on_telemetry = lambda cp, row: (fed.append((cp, row["seq"])), bridge_feed(cp, row))

    async def scenario():
        async with raw_socket(server, "CP-TEL") as ws:
            answers = [await exchange(ws, transfer(f"t{seq}", report(seq))) for seq in (1, 2, 3)]
            # answered means committed: the rows are readable as the answers arrive
            assert [r["seq"] for r in rows(server, "CP-TEL")] == [1, 2, 3]
            _, record = await ahttp(server, "GET", "/api/v1/chargepoints/CP-TEL")
            assert record["telemetry"]["online"] is True
            return answers

    answers = run(scenario())
    assert [a[:2] for a in answers] == [[3, "t1"], [3, "t2"], [3, "t3"]]
    assert all(a[2] == {"status": "Accepted"} for a in answers), answers
    stored = rows(server, "CP-TEL")
    assert stored[0]["v"] == 230.1 and stored[0]["st"] == "Charging" and stored[0]["heap"] == 40000
    assert fed == [("CP-TEL", 1), ("CP-TEL", 2), ("CP-TEL", 3)]  # the ThingSpeak bridge's feed
    assert data_transfer_rows(server) == 0  # one copy of the data: not a data_transfer too
    counters = server.ingest.counters
    assert counters["received.ocpp"] == 3 and counters["telemetry_accepted"] == 3
    # no last will for telemetry inside OCPP: the connection closing says it stopped
    record = wait_until(lambda: (lambda r: r if not r["ocpp"]["online"] else None)(
        http(server, "GET", "/api/v1/chargepoints/CP-TEL")[1]), 10, "the connection closed")
    assert record["telemetry"]["online"] is False
    events = http(server, "GET", "/api/v1/chargepoints/CP-TEL/events?kind=telemetry_online")[1]
    assert len(events) == 1, events


def test_the_station_id_is_the_connections_never_the_payloads(server):
    register(server, "CP-REAL")
    register(server, "CP-OTHER")

    async def scenario():
        async with raw_socket(server, "CP-REAL") as ws:
            return await exchange(ws, transfer("t1", report(7, cp_id="CP-OTHER", id="CP-OTHER")))

    assert run(scenario())[2] == {"status": "Accepted"}
    assert [r["seq"] for r in rows(server, "CP-REAL")] == [7]
    assert rows(server, "CP-OTHER") == []


def test_invalid_reports_are_rejected_with_the_reason_counted_and_not_stored(server):
    register(server, "CP-BAD")
    cases = {
        "json": "{not json",
        "nan": '{"ts":1790000000,"seq":1,"v":NaN}',
        "schema": json.dumps({"ts": 1790000000, "seq": -1}),
        "missing seq": json.dumps({"ts": 1790000000}),
        "not an object": "[1,2,3]",
        "oversize": report(1, pad="x" * 300),
        "lone surrogate": '{"ts":1790000000,"seq":1,"st":"\\ud800"}',
    }

    async def scenario():
        answers = {}
        async with raw_socket(server, "CP-BAD") as ws:
            for name, data in cases.items():
                answers[name] = await exchange(ws, transfer(name[:30], data))
            answers["no data"] = await exchange(ws, transfer("nodata", None))
        return answers

    answers = run(scenario())
    for name, answer in answers.items():
        assert answer[0] == 3, (name, answer)
        assert answer[2]["status"] == "Rejected", (name, answer)
        assert answer[2]["data"], (name, answer)
    assert answers["json"][2]["data"].startswith("json: ")
    assert answers["nan"][2]["data"].startswith("json: ")
    assert answers["schema"][2]["data"].startswith("schema: seq")
    assert answers["oversize"][2]["data"].startswith("size: ")
    assert rows(server, "CP-BAD") == []
    assert data_transfer_rows(server) == 0
    assert answers["no data"][2]["data"].startswith("json: ")
    assert server.ingest.counters["invalid"] == len(cases) + 1
    assert server.ingest.stations["CP-BAD"].invalid == len(cases) + 1


def test_data_that_is_not_a_string_is_a_schema_violation_and_stores_nothing(server):
    """OCPP 1.6's DataTransfer schema types `data` as a string: a report sent as an object
    is answered with the schema's CALLERROR (as any DataTransfer would be), not stored."""
    register(server, "CP-OBJ")

    async def scenario():
        async with raw_socket(server, "CP-OBJ") as ws:
            return await exchange(ws, transfer("o1", {"ts": 1790000000, "seq": 1}))

    answer = run(scenario())
    assert answer[0] == 4 and answer[2] == "TypeConstraintViolation", answer
    assert rows(server, "CP-OBJ") == [] and data_transfer_rows(server) == 0


def test_a_duplicate_seq_is_accepted_again_and_stored_once(server):
    register(server, "CP-DUP")

    async def scenario():
        async with raw_socket(server, "CP-DUP") as ws:
            first = await exchange(ws, transfer("d1", report(5)))
            again = await exchange(ws, transfer("d2", report(5)))
            return first, again

    first, again = run(scenario())
    assert first[2] == again[2] == {"status": "Accepted"}
    assert [r["seq"] for r in rows(server, "CP-DUP")] == [5]
    assert server.ingest.counters["duplicates"] == 1


def test_other_data_transfers_are_unchanged(server):
    register(server, "CP-DT2")

    async def scenario():
        async with raw_socket(server, "CP-DT2") as ws:
            log_line = await exchange(ws, transfer("l1", "hello", message_id="log"))
            elsewhere = await exchange(ws, transfer("e1", report(1), vendor="Elsewhere"))
            return log_line, elsewhere

    log_line, elsewhere = run(scenario())
    assert log_line[2] == {"status": "Accepted"}
    assert elsewhere[2] == {"status": "UnknownVendorId"}
    assert data_transfer_rows(server) == 2
    assert rows(server, "CP-DT2") == []


def test_a_store_that_cannot_commit_gets_a_callerror_and_the_report_is_not_lost(start_server):
    """Another connection holds the database's write lock: the store cannot commit. The
    report is answered InternalError (not Accepted) after the commit timeout; once the
    lock is gone the held row commits, and the station's retry of the same report is a
    duplicate answered Accepted: stored once, nothing lost."""
    app = start_server({"store.commit_timeout": 1.5})
    register(app, "CP-LOCK")
    blocker = sqlite3.connect(app.config.database_path, timeout=1, isolation_level=None)

    async def while_locked():
        async with raw_socket(app, "CP-LOCK") as ws:
            blocker.execute("BEGIN IMMEDIATE")
            try:
                return await exchange(ws, transfer("k1", report(9)))
            finally:
                blocker.execute("ROLLBACK")

    try:
        refused = run(while_locked())
    finally:
        blocker.close()
    assert refused[0] == 4 and refused[2] == "InternalError", refused
    assert "try again" in refused[3]

    async def retry():
        async with raw_socket(app, "CP-LOCK") as ws:
            return await exchange(ws, transfer("k2", report(9)))

    assert run(retry())[2] == {"status": "Accepted"}
    assert [r["seq"] for r in rows(app, "CP-LOCK")] == [9]
