"""The charge point against an independent central system (the `ocpp` package, schemas
on), with the station test double (tests/firmware_ocpp/fakestation.py).

- every central-system operation of every feature profile, on both runtimes (the
  firmware as .mpy on MicroPython);
- a charging session (boot, heartbeat, status, authorize, start, sampled meter values,
  stop) on both runtimes, with the peak heap on MicroPython.
Every message the charge point sends must validate against the OCPP 1.6 schemas."""

import json
import re

import pytest
from cprunner import ChargePointProcess, wait_until
from ocpp.v16 import call

KEY = "0123456789abcdef"
CP = "PICO-OPS"


def config(url):
    return {"cp_id": CP, "limits": {"max_current_a": 32},
            "ocpp": {"url": url, "password": KEY, "reconnect_min_s": 0.2,
                     "keys": {"MeterValueSampleInterval": 1, "HeartbeatInterval": 2}}}


# the `cs` fixture's heartbeat interval (tests/firmware_ocpp/conftest.py)
CS_HEARTBEAT_S = 2


def errors_of(frame):
    assert frame[0] == 4, frame
    return frame[2]


@pytest.mark.dual_runtime
def test_every_central_system_operation_is_answered_and_every_message_validates(
        cs, runtime_name, tmp_path):
    cp = ChargePointProcess(runtime_name, tmp_path / "cp", config(cs.url))
    try:
        cs.wait(lambda: cs.booted(CP), 30, "BootNotification")
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available")
        cs.wait(lambda: cs.of("Heartbeat", CP), 30, "a heartbeat")

        # configuration
        conf = cs.call(CP, call.GetConfiguration(key=["HeartbeatInterval", "NoSuchKey"]))
        assert conf.configuration_key == [{"key": "HeartbeatInterval", "readonly": False, "value": "2"}]
        assert conf.unknown_key == ["NoSuchKey"]
        every = cs.call(CP, call.GetConfiguration())
        names = {k["key"] for k in every.configuration_key}
        assert {"AuthorizeRemoteTxRequests", "MeterValuesSampledData", "NumberOfConnectors",
                "TransactionMessageAttempts", "LocalAuthListEnabled"} <= names
        assert "AuthorizationKey" not in names  # write-only
        assert cs.call(CP, call.ChangeConfiguration(key="NumberOfConnectors", value="2")).status == "Rejected"
        assert cs.call(CP, call.ChangeConfiguration(key="Nope", value="1")).status == "NotSupported"
        assert cs.call(CP, call.ChangeConfiguration(key="MeterValueSampleInterval", value="x")).status == "Rejected"
        assert cs.call(CP, call.ChangeConfiguration(key="AuthorizationKey", value=KEY)).status == "RebootRequired"
        assert cs.call(CP, call.ChangeConfiguration(
            key="MeterValuesSampledData",
            value="Energy.Active.Import.Register,Power.Active.Import,Current.Offered,Voltage")).status == "Accepted"

        # RPC errors as OCPP 1.6-J spells them
        assert errors_of(cs.raw(CP, [2, "e1", "FlyToTheMoon", {}])) == "NotImplemented"
        assert errors_of(cs.raw(CP, [2, "e2", "Heartbeat", {}])) == "NotSupported"
        assert errors_of(cs.raw(CP, [2, "e3", "Reset", {}])) == "OccurenceConstraintViolation"
        assert errors_of(cs.raw(CP, [2, "e4", "Reset", {"type": 5}])) == "TypeConstraintViolation"
        assert errors_of(cs.raw(CP, [2, "e5", "Reset", {"type": "Gentle"}])) == "PropertyConstraintViolation"
        assert errors_of(cs.raw(CP, [2, "e6", "ClearCache", []])) == "FormationViolation"
        assert errors_of(cs.raw(CP, [2, "e7", "RemoteStopTransaction", {"transactionId": "1"}])) == "TypeConstraintViolation"

        # local list, cache, data transfer
        assert cs.call(CP, call.GetLocalListVersion()).list_version == 0
        assert cs.call(CP, call.SendLocalList(list_version=3, update_type="Full", local_authorization_list=[
            {"idTag": "LIST1", "idTagInfo": {"status": "Accepted"}},
            {"idTag": "BLOCKED", "idTagInfo": {"status": "Blocked"}}])).status == "Accepted"
        assert cs.call(CP, call.SendLocalList(list_version=2, update_type="Differential",
                                              local_authorization_list=[])).status == "VersionMismatch"
        assert cs.call(CP, call.SendLocalList(list_version=4, update_type="Differential", local_authorization_list=[
            {"idTag": "BLOCKED"}])).status == "Accepted"
        assert cs.call(CP, call.GetLocalListVersion()).list_version == 4
        assert cs.call(CP, call.ClearCache()).status == "Accepted"
        dt = cs.call(CP, call.DataTransfer(vendor_id="PicoCharge", message_id="echo", data="hi"))
        assert (dt.status, dt.data) == ("Accepted", "hi")
        assert cs.call(CP, call.DataTransfer(vendor_id="Other")).status == "UnknownVendorId"

        # reservation
        future = "2099-01-01T00:00:00Z"
        assert cs.call(CP, call.ReserveNow(connector_id=0, expiry_date=future, id_tag="R1",
                                           reservation_id=7)).status == "Rejected"
        assert cs.call(CP, call.ReserveNow(connector_id=1, expiry_date=future, id_tag="R1",
                                           reservation_id=7)).status == "Accepted"
        cs.wait(lambda: cs.last_status(CP) == "Reserved", 30, "Reserved")
        assert cs.call(CP, call.CancelReservation(reservation_id=8)).status == "Rejected"
        assert cs.call(CP, call.CancelReservation(reservation_id=7)).status == "Accepted"
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available again")

        # smart charging: a charge-point cap and a default profile
        assert cs.call(CP, call.SetChargingProfile(connector_id=0, cs_charging_profiles={
            "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "ChargePointMaxProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": {
                "startSchedule": "2020-01-01T00:00:00Z", "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 20}]}})).status == "Accepted"
        assert cs.call(CP, call.SetChargingProfile(connector_id=1, cs_charging_profiles={
            "chargingProfileId": 2, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative", "chargingSchedule": {
                "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 8}]}})).status == "Rejected"
        comp = cs.call(CP, call.GetCompositeSchedule(connector_id=1, duration=3600))
        assert comp.status == "Accepted"
        assert comp.charging_schedule["charging_schedule_period"][0]["limit"] == 20

        # trigger every triggerable message
        for what in ("BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
                     "Heartbeat", "MeterValues", "StatusNotification"):
            assert cs.call(CP, call.TriggerMessage(requested_message=what)).status == "Accepted"
        cs.wait(lambda: cs.of("FirmwareStatusNotification", CP) and cs.of("DiagnosticsStatusNotification", CP)
                and len(cs.of("BootNotification", CP)) >= 2 and cs.of("MeterValues", CP), 30, "triggered messages")
        assert cs.call(CP, call.TriggerMessage(requested_message="StatusNotification", connector_id=5)).status == "Rejected"

        # a remote start, the EV charges under the cap, a TxProfile lowers it, remote stop
        assert cs.call(CP, call.RemoteStartTransaction(id_tag="CARD1")).status == "Accepted"
        cs.wait(lambda: any(m["id_tag"] == "CARD1" for m in cs.of("Authorize", CP)), 30, "Authorize")
        cs.wait(lambda: cs.last_status(CP) == "Preparing", 30, "Preparing")
        cp.ev(pilot="B")
        cs.wait(lambda: cs.transactions, 30, "StartTransaction")
        cp.ev(pilot="C")
        cs.wait(lambda: cs.last_status(CP) == "Charging", 30, "Charging")
        txid = max(cs.transactions)
        assert cs.call(CP, call.SetChargingProfile(connector_id=1, cs_charging_profiles={
            "chargingProfileId": 3, "transactionId": txid, "stackLevel": 1,
            "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 2760, "numberPhases": 1}]}})).status == "Accepted"
        comp = cs.call(CP, call.GetCompositeSchedule(connector_id=1, duration=600, charging_rate_unit="A"))
        assert comp.charging_schedule["charging_schedule_period"][0]["limit"] == 12
        cs.wait(lambda: len(cs.transactions[txid]["values"]) >= 2, 30, "sampled meter values")
        assert cs.call(CP, call.ChangeAvailability(connector_id=1, type="Inoperative")).status == "Scheduled"
        assert cs.call(CP, call.RemoteStopTransaction(transaction_id=txid + 100)).status == "Rejected"
        assert cs.call(CP, call.RemoteStopTransaction(transaction_id=txid)).status == "Accepted"
        cs.wait(lambda: cs.transactions[txid]["meter_stop"] is not None, 30, "StopTransaction")
        cs.wait(lambda: cs.last_status(CP) == "Unavailable", 30, "the scheduled Unavailable")
        assert cs.call(CP, call.ChangeAvailability(connector_id=0, type="Operative")).status == "Accepted"
        cp.ev(pilot="A")
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available after unplug")
        assert cs.call(CP, call.ClearChargingProfile()).status == "Accepted"
        assert cs.call(CP, call.ClearChargingProfile(id=99)).status == "Unknown"
        assert cs.call(CP, call.UnlockConnector(connector_id=1)).status == "Unlocked"

        tx = cs.transactions[txid]
        assert tx["reason"] == "Remote"
        registers = [int(sv["value"]) for mv in tx["values"] for v in mv for sv in v["sampled_value"]
                     if sv.get("measurand") == "Energy.Active.Import.Register"]
        assert registers == sorted(registers)
        assert tx["meter_start"] <= registers[0] <= registers[-1] <= tx["meter_stop"]
        offered = [float(sv["value"]) for mv in tx["values"] for v in mv for sv in v["sampled_value"]
                   if sv.get("measurand") == "Current.Offered"]
        assert offered and min(offered) <= 12.0
        assert tx["transaction_data"], "StopTxnSampledData goes into transactionData"

        assert cs.call(CP, call.Reset(type="Soft")).status == "Accepted"
        wait_until(lambda: "RESET Soft" in cp.console(), 30, "the reset handler")
    finally:
        out = cp.finish()
    assert cs.invalid == [], cs.invalid
    assert not cs.unknown_tx and not cs.double_stops
    sent = {action for action, _ in cs.sent_calls()}
    assert {"BootNotification", "StatusNotification", "Heartbeat", "Authorize", "StartTransaction",
            "MeterValues", "StopTransaction", "FirmwareStatusNotification",
            "DiagnosticsStatusNotification"} <= sent
    summary = json.loads(out.split("SUMMARY ", 1)[1].splitlines()[0])
    assert summary["registration"] == "Accepted"


@pytest.mark.dual_runtime
def test_a_charging_session_is_reported_with_monotonic_meter_values(
        cs, runtime_name, tmp_path, record_heap):
    cp = ChargePointProcess(runtime_name, tmp_path / "cp", config(cs.url))
    try:
        cs.wait(lambda: cs.booted(CP), 30, "BootNotification")
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available")
        cs.wait(lambda: cs.of("Heartbeat", CP), 30, "a heartbeat while idle")
        cp.ev(pilot="B")
        cs.wait(lambda: cs.last_status(CP) == "Preparing", 30, "Preparing")
        cp.ev(start=True, tag="CARD9")
        cs.wait(lambda: cs.transactions, 30, "StartTransaction")
        cp.ev(pilot="C")
        cs.wait(lambda: cs.last_status(CP) == "Charging", 30, "Charging")
        txid = max(cs.transactions)
        cs.wait(lambda: len(cs.transactions[txid]["values"]) >= 3, 30, "sampled meter values")
        cp.ev(pilot="A")
        cs.wait(lambda: cs.transactions[txid]["meter_stop"] is not None, 30, "StopTransaction")
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available after unplug")
    finally:
        out = cp.finish()
    tx = cs.transactions[txid]
    assert (tx["id_tag"], tx["reason"]) == ("CARD9", "EVDisconnected")
    registers = [int(sv["value"]) for mv in tx["values"] for v in mv for sv in v["sampled_value"]
                 if sv.get("measurand") == "Energy.Active.Import.Register"]
    assert registers == sorted(registers) and registers[-1] > registers[0]
    assert tx["meter_start"] <= registers[0] and registers[-1] <= tx["meter_stop"]
    assert [m["id_tag"] for m in cs.of("Authorize", CP)] == ["CARD9"]
    statuses = cs.statuses(CP)
    for s in ("Available", "Preparing", "Charging"):
        assert s in statuses, statuses
    assert cs.invalid == [], cs.invalid
    if runtime_name == "micropython":
        record_heap(int(re.search(r"^HEAP (\d+)$", out, re.M).group(1)))
