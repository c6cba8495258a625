"""Every charge-point-initiated OCPP 1.6 message, sent by an independent client built on
the published ``ocpp`` package (which validates our answers against its 1.6 schemas),
and what the central system stores from each."""

from __future__ import annotations

import time

from ocpp.v16 import call

from server.timeutil import to_iso
from tests.server.conftest import ahttp, charge_point, exchange, now_iso, raw_socket, register, run


def test_boot_notification_of_a_known_charge_point_is_accepted_and_recorded(server):
    register(server, "CP-BOOT")

    async def scenario():
        async with charge_point(server, "CP-BOOT") as cp:
            assert cp.boot_answer.status == "Accepted"
            assert cp.boot_answer.interval == server.config.ocpp["heartbeat_interval"]
            status, record = await ahttp(server, "GET", "/api/v1/chargepoints/CP-BOOT")
            assert status == 200
            assert record["model"] == "PicoW" and record["vendor"] == "PicoCharge"
            assert record["firmware_version"] == "0.1.0"
            assert record["ocpp"]["online"] is True

    run(scenario())


def test_heartbeat_answers_current_time(server):
    register(server, "CP-HB")

    async def scenario():
        async with charge_point(server, "CP-HB") as cp:
            answer = await cp.call(call.Heartbeat())
            assert abs(time.time() - _epoch(answer.current_time)) < 5

    run(scenario())


def _epoch(iso: str) -> float:
    from server.timeutil import parse_time
    return parse_time(iso)


def test_status_notifications_update_connectors_and_keep_history(server):
    register(server, "CP-ST")

    async def scenario():
        async with charge_point(server, "CP-ST") as cp:
            for status in ("Available", "Preparing", "Charging"):
                await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                                      status=status, timestamp=now_iso()))
            await cp.call(call.StatusNotification(connector_id=0, error_code="NoError",
                                                  status="Available"))
            _, connectors = await ahttp(server, "GET", "/api/v1/chargepoints/CP-ST/connectors")
            assert {c["connector_id"]: c["status"] for c in connectors} == {0: "Available",
                                                                           1: "Charging"}
            _, history = await ahttp(server, "GET", "/api/v1/chargepoints/CP-ST/status-history")
            assert [h["status"] for h in history if h["connector_id"] == 1] == [
                "Charging", "Preparing", "Available"]

    run(scenario())


def test_a_station_cannot_grow_its_connectors_past_the_configured_cap(server):
    """A connectorId above ocpp.max_connectors (8) is refused in every message that names
    one, nothing is stored for it, and a station's listing shows only its own connectors."""
    register(server, "CP-CAP")
    register(server, "CP-NEXT")

    def status(n):
        return [2, f"s{n}", "StatusNotification",
                {"connectorId": n, "errorCode": "NoError", "status": "Available"}]

    async def scenario():
        async with charge_point(server, "CP-CAP"):
            pass
        async with charge_point(server, "CP-NEXT") as other:
            await other.call(call.StatusNotification(connector_id=2, error_code="NoError",
                                                     status="Faulted"))
        async with raw_socket(server, "CP-CAP") as ws:
            for n in (0, 1, 8):
                assert (await exchange(ws, status(n)))[0] == 3
            for n in (9, 2**31 - 1):
                refused = await exchange(ws, status(n))
                assert refused[0] == 4 and refused[2] == "PropertyConstraintViolation", refused
            start = [2, "t", "StartTransaction", {"connectorId": 9, "idTag": "T",
                                                  "meterStart": 0, "timestamp": now_iso()}]
            assert (await exchange(ws, start))[2] == "PropertyConstraintViolation"
            values = [2, "m", "MeterValues", {"connectorId": 100000, "meterValue": [
                {"timestamp": now_iso(), "sampledValue": [{"value": "1"}]}]}]
            assert (await exchange(ws, values))[2] == "PropertyConstraintViolation"
        _, connectors = await ahttp(server, "GET", "/api/v1/chargepoints/CP-CAP/connectors")
        assert [c["connector_id"] for c in connectors] == [0, 1, 8]
        _, listing = await ahttp(server, "GET", "/api/v1/chargepoints/CP-NEXT/connectors")
        assert [(c["connector_id"], c["status"]) for c in listing] == [(2, "Faulted")]
        _, txs = await ahttp(server, "GET", "/api/v1/transactions?cp_id=CP-CAP")
        assert txs == [], txs

    run(scenario())


def test_authorize_answers_from_the_id_tag_table(server):
    register(server, "CP-AUTH")
    from tests.server.conftest import http
    http(server, "POST", "/api/v1/idtags", {"id_tag": "GOOD", "parent_id_tag": "FLEET"})
    http(server, "POST", "/api/v1/idtags", {"id_tag": "BLOCKED"})
    http(server, "POST", "/api/v1/idtags/BLOCKED/block")
    http(server, "POST", "/api/v1/idtags", {"id_tag": "OLD", "expiry": time.time() - 60})
    future = time.time() + 86400
    http(server, "POST", "/api/v1/idtags", {"id_tag": "SOON", "expiry": future})

    async def scenario():
        async with charge_point(server, "CP-AUTH") as cp:
            answers = {}
            for tag in ("GOOD", "BLOCKED", "OLD", "SOON", "NOBODY"):
                answers[tag] = (await cp.call(call.Authorize(id_tag=tag))).id_tag_info
            assert answers["GOOD"] == {"status": "Accepted", "parent_id_tag": "FLEET"}
            assert answers["BLOCKED"]["status"] == "Blocked"
            assert answers["OLD"]["status"] == "Expired"
            assert answers["SOON"] == {"status": "Accepted", "expiry_date": to_iso(future)}
            assert answers["NOBODY"]["status"] == "Invalid"

    run(scenario())


def test_start_and_stop_transaction_store_energy_and_transaction_data(server):
    register(server, "CP-TX")
    from tests.server.conftest import http
    http(server, "POST", "/api/v1/idtags", {"id_tag": "DRIVER"})

    async def scenario():
        async with charge_point(server, "CP-TX") as cp:
            start = await cp.call(call.StartTransaction(connector_id=1, id_tag="DRIVER",
                                                        meter_start=1000, timestamp=now_iso()))
            assert start.id_tag_info["status"] == "Accepted"
            tx_id = start.transaction_id
            stop = await cp.call(call.StopTransaction(
                meter_stop=4500, timestamp=now_iso(), transaction_id=tx_id, reason="EVDisconnected",
                id_tag="DRIVER",
                transaction_data=[{"timestamp": now_iso(), "sampled_value": [
                    {"value": "4500", "measurand": "Energy.Active.Import.Register", "unit": "Wh",
                     "context": "Transaction.End", "location": "Outlet"}]}]))
            assert stop.id_tag_info["status"] == "Accepted"
            status, tx = await ahttp(server, "GET", f"/api/v1/transactions/{tx_id}")
            assert status == 200
            assert tx["energy_wh"] == 3500 and tx["stop_reason"] == "EVDisconnected"
            assert tx["active"] is False
            assert [(m["value"], m["context"], m["source"]) for m in tx["meter_values"]] == [
                ("4500", "Transaction.End", "StopTransaction")]

    run(scenario())


def test_retransmitted_start_transaction_returns_the_same_transaction_id(server):
    register(server, "CP-DUP")

    async def scenario():
        stamp = now_iso()
        request = call.StartTransaction(connector_id=2, id_tag="ANY", meter_start=77,
                                        timestamp=stamp)
        async with charge_point(server, "CP-DUP") as cp:
            first = await cp.call(request)
        # The charge point lost the answer, reconnects and sends the same request again.
        async with charge_point(server, "CP-DUP", boot=False) as cp:
            again = await cp.call(request)
            other = await cp.call(call.StartTransaction(connector_id=2, id_tag="ANY",
                                                        meter_start=78, timestamp=stamp))
        assert again.transaction_id == first.transaction_id
        assert other.transaction_id != first.transaction_id
        _, txs = await ahttp(server, "GET", "/api/v1/transactions?cp_id=CP-DUP")
        assert sorted(t["id"] for t in txs) == sorted({first.transaction_id, other.transaction_id})

    run(scenario())


def test_meter_values_store_every_sampled_value_with_its_attributes(server):
    register(server, "CP-MV")

    async def scenario():
        async with charge_point(server, "CP-MV") as cp:
            await cp.call(call.MeterValues(connector_id=1, transaction_id=None, meter_value=[{
                "timestamp": now_iso(), "sampled_value": [
                    {"value": "230.1", "measurand": "Voltage", "unit": "V", "phase": "L1-N",
                     "context": "Sample.Periodic", "location": "Inlet"},
                    {"value": "15.9", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
                    {"value": "1234"}]}]))
            _, rows = await ahttp(server, "GET", "/api/v1/chargepoints/CP-MV/meter-values")
            by_measurand = {r["measurand"]: r for r in rows}
            assert by_measurand["Voltage"]["unit"] == "V"
            assert by_measurand["Voltage"]["phase"] == "L1-N"
            assert by_measurand["Voltage"]["location"] == "Inlet"
            assert by_measurand["Current.Import"]["phase"] == "L1"
            default = by_measurand["Energy.Active.Import.Register"]
            assert (default["value"], default["unit"], default["context"], default["location"]) == (
                "1234", "Wh", "Sample.Periodic", "Outlet")
            _, only_voltage = await ahttp(
                server, "GET", "/api/v1/chargepoints/CP-MV/meter-values?measurand=Voltage")
            assert [r["value"] for r in only_voltage] == ["230.1"]

    run(scenario())


def test_data_transfer_accepts_our_vendor_and_reports_unknown_vendors(server):
    register(server, "CP-DT")

    async def scenario():
        async with charge_point(server, "CP-DT") as cp:
            ours = await cp.call(call.DataTransfer(vendor_id="PicoCharge", message_id="log",
                                                   data="hello"))
            theirs = await cp.call(call.DataTransfer(vendor_id="Elsewhere", data="x"))
            assert ours.status == "Accepted"
            assert theirs.status == "UnknownVendorId"

    run(scenario())


def test_firmware_and_diagnostics_status_notifications_are_stored_as_events(server):
    register(server, "CP-FW")

    async def scenario():
        async with charge_point(server, "CP-FW") as cp:
            await cp.call(call.FirmwareStatusNotification(status="Downloading"))
            await cp.call(call.FirmwareStatusNotification(status="Installed"))
            await cp.call(call.DiagnosticsStatusNotification(status="Uploaded"))
            _, record = await ahttp(server, "GET", "/api/v1/chargepoints/CP-FW")
            assert record["firmware_status"] == "Installed"
            assert record["diagnostics_status"] == "Uploaded"
            _, events = await ahttp(server, "GET", "/api/v1/chargepoints/CP-FW/events?kind=firmware_status")
            assert [e["detail"]["status"] for e in events] == ["Installed", "Downloading"]

    run(scenario())
