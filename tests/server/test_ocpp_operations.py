"""Every central-system-initiated OCPP 1.6 operation through
``POST /api/v1/chargepoints/<id>/<operation>``, and the API's errors."""

from __future__ import annotations

import asyncio

import pytest
from ocpp.exceptions import NotSupportedError
from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from server.ocpp.schemas import CENTRAL_SYSTEM_ACTIONS
from tests.server.conftest import (
    ChargePointClient,
    ahttp,
    charge_point,
    http,
    now_iso,
    register,
    run,
)

OPERATION_REQUESTS = {
    "CancelReservation": {"reservationId": 7},
    "ChangeAvailability": {"connectorId": 1, "type": "Inoperative"},
    "ChangeConfiguration": {"key": "HeartbeatInterval", "value": "120"},
    "ClearCache": {},
    "ClearChargingProfile": {"id": 3},
    "DataTransfer": {"vendorId": "PicoCharge", "messageId": "ping", "data": "ping"},
    "GetCompositeSchedule": {"connectorId": 1, "duration": 3600, "chargingRateUnit": "A"},
    "GetConfiguration": {"key": ["HeartbeatInterval"]},
    "GetDiagnostics": {"location": "http://127.0.0.1/diagnostics/CP-OPS"},
    "GetLocalListVersion": {},
    "RemoteStartTransaction": {"connectorId": 1, "idTag": "OPERATOR"},
    "RemoteStopTransaction": {"transactionId": 42},
    "ReserveNow": {"connectorId": 1, "expiryDate": "2030-01-01T00:00:00Z", "idTag": "OPERATOR",
                   "reservationId": 7},
    "Reset": {"type": "Soft"},
    "SendLocalList": {"listVersion": 4, "updateType": "Full",
                      "localAuthorizationList": [{"idTag": "A1",
                                                  "idTagInfo": {"status": "Accepted"}}]},
    "SetChargingProfile": {"connectorId": 1, "csChargingProfiles": {
        "chargingProfileId": 3, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute", "chargingSchedule": {
            "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}}},
    "TriggerMessage": {"requestedMessage": "StatusNotification", "connectorId": 1},
    "UnlockConnector": {"connectorId": 1},
    "UpdateFirmware": {"location": "http://127.0.0.1/firmware/b/manifest.json",
                       "retrieveDate": "2030-01-01T00:00:00Z"},
}


def test_the_request_table_covers_every_central_system_operation():
    assert set(OPERATION_REQUESTS) == set(CENTRAL_SYSTEM_ACTIONS)
    assert len(CENTRAL_SYSTEM_ACTIONS) == 19


def test_every_operation_reaches_the_charge_point_and_returns_its_answer(server):
    register(server, "CP-OPS")

    async def scenario():
        async with charge_point(server, "CP-OPS") as cp:
            for operation, payload in OPERATION_REQUESTS.items():
                status, body = await ahttp(server, "POST", f"/api/v1/chargepoints/CP-OPS/{operation}",
                                           payload)
                assert status == 200, (operation, body)
                assert body["operation"] == operation
                assert isinstance(body["result"], dict)
            assert [name for name, _ in cp.received] == list(OPERATION_REQUESTS)
            answers = {}
            for operation in ("UnlockConnector", "GetLocalListVersion", "GetDiagnostics",
                              "GetConfiguration"):
                _, body = await ahttp(server, "POST", f"/api/v1/chargepoints/CP-OPS/{operation}",
                                      OPERATION_REQUESTS[operation])
                answers[operation] = body["result"]
            assert answers["UnlockConnector"] == {"status": "Unlocked"}
            assert answers["GetLocalListVersion"] == {"listVersion": 3}
            assert answers["GetDiagnostics"] == {"fileName": "diag.log"}
            assert answers["GetConfiguration"]["configurationKey"][0]["key"] == "HeartbeatInterval"

    run(scenario())


def test_operation_on_unknown_charge_point_is_404_and_on_offline_one_is_409(server):
    register(server, "CP-OFF")
    status, body = http(server, "POST", "/api/v1/chargepoints/NOBODY/Reset", {"type": "Soft"})
    assert status == 404 and "NOBODY" in body["reason"]
    status, body = http(server, "POST", "/api/v1/chargepoints/CP-OFF/Reset", {"type": "Soft"})
    assert status == 409 and "not connected" in body["reason"]


def test_invalid_operation_payload_is_400_with_the_ocpp_error_code(server):
    register(server, "CP-BAD")
    status, body = http(server, "POST", "/api/v1/chargepoints/CP-BAD/Reset", {"type": "Sideways"})
    assert status == 400
    assert body["code"] == "PropertyConstraintViolation"
    status, body = http(server, "POST", "/api/v1/chargepoints/CP-BAD/Frobnicate", {})
    assert status == 404 and "unknown operation" in body["reason"]


class SlowChargePoint(ChargePointClient):
    @on(Action.reset)
    async def on_reset(self, **kw):
        await asyncio.sleep(3)
        return call_result.Reset(status="Accepted")


class RefusingChargePoint(ChargePointClient):
    @on(Action.reset)
    def on_reset(self, **kw):
        raise NotSupportedError("this charge point cannot reset")  # becomes a CALLERROR

    # The ocpp library would refuse to send this itself, so its validation is skipped.
    @on(Action.unlock_connector, skip_schema_validation=True)
    def on_unlock_connector(self, **kw):
        return call_result.UnlockConnector(status="Exploded")  # not a 1.6 value


def test_operation_without_answer_in_time_is_504(server):
    register(server, "CP-SLOW")

    async def scenario():
        async with charge_point(server, "CP-SLOW", cls=SlowChargePoint):
            status, body = await ahttp(server, "POST", "/api/v1/chargepoints/CP-SLOW/Reset?timeout=0.5",
                                       {"type": "Soft"})
            assert status == 504 and "no answer" in body["reason"]

    run(scenario())


@pytest.mark.parametrize("operation,payload,code", [
    ("Reset", {"type": "Hard"}, "NotSupported"),
    ("UnlockConnector", {"connectorId": 1}, "PropertyConstraintViolation"),
])
def test_callerror_or_invalid_answer_is_502_with_the_error_code(server, operation, payload, code):
    register(server, "CP-REF")

    async def scenario():
        async with charge_point(server, "CP-REF", cls=RefusingChargePoint):
            status, body = await ahttp(server, "POST", f"/api/v1/chargepoints/CP-REF/{operation}",
                                       payload)
            assert status == 502
            assert body["code"] == code

    run(scenario())


def test_operations_are_recorded_as_events(server):
    register(server, "CP-EV")

    async def scenario():
        async with charge_point(server, "CP-EV"):
            await ahttp(server, "POST", "/api/v1/chargepoints/CP-EV/ClearCache", {})
        _, events = await ahttp(server, "GET", "/api/v1/chargepoints/CP-EV/events?kind=operation")
        assert events[0]["detail"] == {"action": "ClearCache", "outcome": "answered",
                                       "status": "Accepted"}

    run(scenario())


def test_remote_start_then_charge_point_starts_the_transaction(server):
    register(server, "CP-RS")
    http(server, "POST", "/api/v1/idtags", {"id_tag": "REMOTE"})

    async def scenario():
        async with charge_point(server, "CP-RS") as cp:
            status, _ = await ahttp(server, "POST", "/api/v1/chargepoints/CP-RS/RemoteStartTransaction",
                                    {"connectorId": 1, "idTag": "REMOTE"})
            assert status == 200
            from ocpp.v16 import call
            start = await cp.call(call.StartTransaction(connector_id=1, id_tag="REMOTE",
                                                        meter_start=0, timestamp=now_iso()))
            _, active = await ahttp(server, "GET", "/api/v1/transactions?cp_id=CP-RS&state=active")
            assert [t["id"] for t in active] == [start.transaction_id]
            status, _ = await ahttp(server, "POST", "/api/v1/chargepoints/CP-RS/RemoteStopTransaction",
                                    {"transactionId": start.transaction_id})
            assert status == 200
            assert cp.received[-1] == ("RemoteStopTransaction",
                                       {"transaction_id": start.transaction_id})

    run(scenario())
