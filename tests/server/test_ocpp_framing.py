"""Malformed, oversized, out-of-order and schema-violating frames get the OCPP 1.6-J
CALLERROR codes as the specification spells them, and the connection survives."""

from __future__ import annotations

import json

import pytest

from tests.server.conftest import exchange, raw_socket, register, run

HEARTBEAT = [2, "hb-after", "Heartbeat", {}]


def _assert_still_serving(answer: list) -> None:
    assert answer[0] == 3 and answer[1] == "hb-after" and "currentTime" in answer[2]


@pytest.mark.parametrize("frame,unique_id,code", [
    ('[2, "m1", "Heartbeat", {', "m1", "FormationViolation"),           # broken JSON
    ('{"not": "an array"}', "-1", "FormationViolation"),
    ('[9, "m2", "Heartbeat", {}]', "m2", "FormationViolation"),         # unknown MessageTypeId
    ('[2, 17, "Heartbeat", {}]', "-1", "FormationViolation"),           # UniqueId not a string
    ('[2, "m3", "Heartbeat"]', "m3", "ProtocolError"),                  # incomplete CALL
    ('[2, "m4", "Heartbeat", {}, {}]', "m4", "FormationViolation"),     # extra element
    ('[2, "m5", "Heartbeat", []]', "m5", "FormationViolation"),         # payload not an object
    ('[2, "m6", "FlyToTheMoon", {}]', "m6", "NotImplemented"),          # unknown action
    ('[2, "m7", "SecurityEventNotification", {"type": "x", "timestamp": "2024-01-01T00:00:00Z"}]',
     "m7", "NotSupported"),                                            # known, not supported
    ('[2, "m8", "Reset", {"type": "Soft"}]', "m8", "NotSupported"),     # wrong direction
    ('[2, "m9", "BootNotification", {"chargePointVendor": "V"}]', "m9",
     "OccurenceConstraintViolation"),                                  # required field missing
    ('[2, "m10", "BootNotification", {"chargePointVendor": 5, "chargePointModel": "M"}]', "m10",
     "TypeConstraintViolation"),
    ('[2, "m11", "BootNotification", {"chargePointVendor": "' + "V" * 21 +
     '", "chargePointModel": "M"}]', "m11", "PropertyConstraintViolation"),  # maxLength 20
    ('[2, "m12", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", '
     '"status": "Dancing"}]', "m12", "PropertyConstraintViolation"),   # enum
    ('[2, "m13", "Heartbeat", {"extra": 1}]', "m13", "FormationViolation"),  # additionalProperties
    ('[2, "m14", "MeterValues", {"connectorId": 1, "meterValue": []}]', "m14",
     "OccurenceConstraintViolation"),                                  # minItems 1
    ('[2, "m15", "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 0, '
     '"timestamp": "yesterday"}]', "m15", "PropertyConstraintViolation"),  # date-time format
])
def test_bad_frame_gets_the_1_6_error_code_and_the_connection_survives(server, frame, unique_id, code):
    register(server, "CP-FRAME")

    async def scenario():
        async with raw_socket(server, "CP-FRAME") as ws:
            answer = await exchange(ws, frame)
            assert answer[0] == 4
            assert answer[1] == unique_id
            assert answer[2] == code
            assert isinstance(answer[3], str) and isinstance(answer[4], dict)
            _assert_still_serving(await exchange(ws, HEARTBEAT))

    run(scenario())


def test_oversized_frame_gets_generic_error_and_the_connection_survives(start_server):
    app = start_server({"ocpp.max_message_bytes": 2048})
    register(app, "CP-BIG")

    async def scenario():
        async with raw_socket(app, "CP-BIG") as ws:
            big = json.dumps([2, "big1", "DataTransfer", {"vendorId": "PicoCharge", "data": "x" * 5000}])
            answer = await exchange(ws, big)
            assert answer[:3] == [4, "big1", "GenericError"]
            assert "exceeds the limit of 2048 bytes" in answer[3]
            _assert_still_serving(await exchange(ws, HEARTBEAT))

    run(scenario())


def test_answer_to_a_call_never_made_is_ignored_and_the_connection_survives(server):
    register(server, "CP-ORDER")

    async def scenario():
        async with raw_socket(server, "CP-ORDER") as ws:
            await ws.send(json.dumps([3, "never-asked", {"status": "Accepted"}]))
            await ws.send(json.dumps([4, "never-asked", "GenericError", "", {}]))
            _assert_still_serving(await exchange(ws, HEARTBEAT))
        assert server.central.counters["unexpected_answers"] == 2

    run(scenario())


def test_messages_before_an_accepted_boot_are_refused_with_security_error(server):
    register(server, "CP-STRANGER", registration="Rejected")

    async def scenario():
        async with raw_socket(server, "CP-STRANGER") as ws:
            answer = await exchange(ws, [2, "early", "StatusNotification",
                                         {"connectorId": 1, "errorCode": "NoError",
                                          "status": "Available"}])
            assert answer[:3] == [4, "early", "SecurityError"]
            boot = await exchange(ws, [2, "boot", "BootNotification",
                                       {"chargePointVendor": "V", "chargePointModel": "M"}])
            assert boot[2]["status"] == "Rejected"
            again = await exchange(ws, [2, "hb", "Heartbeat", {}])
            assert again[:3] == [4, "hb", "SecurityError"]

    run(scenario())


def test_rate_limit_answers_generic_error_then_recovers(start_server):
    app = start_server({"ocpp.rate_limit_per_second": 5.0, "ocpp.rate_limit_burst": 3})
    register(app, "CP-FLOOD")

    async def scenario():
        async with raw_socket(app, "CP-FLOOD") as ws:
            codes = []
            for i in range(6):
                answer = await exchange(ws, [2, f"f{i}", "Heartbeat", {}])
                codes.append(answer[0] if answer[0] == 3 else answer[2])
            assert codes[:3] == [3, 3, 3]
            assert "GenericError" in codes[3:]
            import asyncio
            await asyncio.sleep(0.5)
            _assert_still_serving(await exchange(ws, HEARTBEAT))

    run(scenario())
