"""Handshake and registration policy: subprotocol, Basic auth (security profile 1),
unknown charge points (Rejected / Pending / auto-register), replacement connections, TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.server.conftest import (
    ahttp,
    basic_auth,
    charge_point,
    exchange,
    http,
    ocpp_url,
    raw_socket,
    register,
    run,
    wait_until,
)


def test_handshake_without_ocpp16_subprotocol_is_refused(server):
    async def scenario():
        for offered in (None, ["ocpp2.0.1"]):
            with pytest.raises(InvalidStatus) as info:
                await websockets.connect(ocpp_url(server, "CP-X"), subprotocols=offered)
            assert info.value.response.status_code == 400

    run(scenario())


def test_negotiated_subprotocol_is_ocpp16(server):
    register(server, "CP-SUB")

    async def scenario():
        async with raw_socket(server, "CP-SUB") as ws:
            assert ws.subprotocol == "ocpp1.6"

    run(scenario())


def test_wrong_path_is_404(server):
    async def scenario():
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(f"ws://127.0.0.1:{server.ports['ocpp']}/elsewhere/CP",
                                     subprotocols=["ocpp1.6"])
        assert info.value.response.status_code == 404

    run(scenario())


def test_basic_auth_is_required_once_an_authorization_key_is_set(server):
    register(server, "CP-KEY", auth_key="0123456789abcdef")

    async def scenario():
        for headers in ({}, basic_auth("CP-KEY", "wrong-password"),
                        basic_auth("OTHER", "0123456789abcdef")):
            with pytest.raises(InvalidStatus) as info:
                await websockets.connect(ocpp_url(server, "CP-KEY"), subprotocols=["ocpp1.6"],
                                         additional_headers=headers)
            assert info.value.response.status_code == 401
            assert "Basic" in info.value.response.headers["WWW-Authenticate"]
        async with charge_point(server, "CP-KEY", password="0123456789abcdef") as cp:
            assert cp.boot_answer.status == "Accepted"

    run(scenario())


def test_require_auth_is_the_default_and_refuses_charge_points_without_a_key(server):
    assert server.config.ocpp["require_auth"] is True
    register(server, "CP-NOKEY", auth_key=None)

    async def scenario():
        for headers in ({}, basic_auth("CP-NOKEY", "any-key-of-16-chars")):
            with pytest.raises(InvalidStatus) as info:
                await websockets.connect(ocpp_url(server, "CP-NOKEY"), subprotocols=["ocpp1.6"],
                                         additional_headers=headers)
            assert info.value.response.status_code == 401

    run(scenario())


def test_lab_shortcut_lets_unknown_keyless_charge_points_in_and_keeps_no_record_of_them(
        start_server):
    app = start_server({"ocpp.require_auth": False})
    server = app

    async def scenario():
        async with charge_point(app, "CP-UNKNOWN", password=None) as cp:
            assert cp.boot_answer.status == "Rejected"
        for n in range(20):  # ids that merely open a WebSocket (fewer than the address's burst)
            async with raw_socket(server, f"CP-NOISE-{n}", password=None):
                pass

    run(scenario())
    status, _ = http(server, "GET", "/api/v1/chargepoints/CP-UNKNOWN")
    assert status == 404
    _, fleet = http(server, "GET", "/api/v1/chargepoints")
    assert fleet == []
    _, events = http(server, "GET", "/api/v1/events")
    assert [e for e in events if e["cp_id"] and e["cp_id"].startswith("CP-")] == []
    _, unknown = http(server, "GET", "/api/v1/unknown-chargepoints")
    listed = {s["id"]: s for s in unknown["stations"]}
    assert listed["CP-UNKNOWN"]["answered"] == "Rejected"
    assert listed["CP-UNKNOWN"]["model"] == "PicoW"
    assert len(listed) + unknown["ignored"] == 21  # the burst limit may skip some ids


def test_charge_point_registered_pending_waits_until_an_operator_accepts_it(server):
    register(server, "CP-NEW", registration="Pending")
    app = server

    async def scenario():
        async with charge_point(app, "CP-NEW") as cp:
            assert cp.boot_answer.status == "Pending"
            status, _ = await ahttp(app, "PATCH", "/api/v1/chargepoints/CP-NEW",
                                    {"registration": "Accepted"})
            assert status == 200
            from ocpp.v16 import call
            again = await cp.call(call.BootNotification(charge_point_model="PicoW",
                                                        charge_point_vendor="PicoCharge"))
            assert again.status == "Accepted"
            await cp.call(call.Heartbeat())

    run(scenario())


def test_auto_register_accepts_and_remembers_the_presented_key(start_server):
    app = start_server({"ocpp.auto_register": True})

    async def scenario():
        with pytest.raises(InvalidStatus) as info:  # too short for an AuthorizationKey
            await websockets.connect(ocpp_url(app, "CP-LAB"), subprotocols=["ocpp1.6"],
                                     additional_headers=basic_auth("CP-LAB", "short-key"))
        assert info.value.response.status_code == 401
        async with charge_point(app, "CP-LAB", password="lab-secret-key-0001") as cp:
            assert cp.boot_answer.status == "Accepted"
            # online in its first session too (its record is made at the BootNotification)
            _, record = await ahttp(app, "GET", "/api/v1/chargepoints/CP-LAB")
            assert record["ocpp"]["online"] is True, record["ocpp"]
        _, record = await ahttp(app, "GET", "/api/v1/chargepoints/CP-LAB")
        assert record["registration"] == "Accepted" and record["has_auth_key"] is True
        with pytest.raises(InvalidStatus):
            await websockets.connect(ocpp_url(app, "CP-LAB"), subprotocols=["ocpp1.6"],
                                     additional_headers=basic_auth("CP-LAB", "another-key-00001"))

    run(scenario())


def test_rejected_registration_answers_rejected(server):
    register(server, "CP-BANNED", registration="Rejected")

    async def scenario():
        async with charge_point(server, "CP-BANNED") as cp:
            assert cp.boot_answer.status == "Rejected"

    run(scenario())


def test_newer_connection_replaces_the_older_one(server):
    register(server, "CP-TWICE")

    async def scenario():
        async with raw_socket(server, "CP-TWICE") as first:
            async with raw_socket(server, "CP-TWICE") as second:
                await asyncio.wait_for(first.wait_closed(), 5)
                assert first.close_reason == "replaced by a newer connection"
                answer = await exchange(second, [2, "hb", "Heartbeat", {}])
                assert answer[0] == 3
                assert server.central.connections["CP-TWICE"].ws is not None
                _, record = await ahttp(server, "GET", "/api/v1/chargepoints/CP-TWICE")
                assert record["ocpp"]["online"] is True
        # the offline event is written once the server has seen the close: wait for it
        deadline = time.monotonic() + 10
        while True:
            _, events = await ahttp(server, "GET", "/api/v1/chargepoints/CP-TWICE/events")
            kinds = [e["kind"] for e in events]
            if "ocpp_offline" in kinds or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert "connection_replaced" in kinds
        # Only the newest connection's close takes the charge point offline (the replaced
        # one closed seconds before: its event would be there already).
        assert kinds.count("ocpp_offline") == 1, kinds

    run(scenario())


def test_tls_endpoint_serves_wss_when_a_certificate_is_configured(tmp_path, start_server):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    app = start_server({"ocpp.tls_cert": str(cert), "ocpp.tls_key": str(key)})
    register(app, "CP-TLS", auth_key="tls-profile-2-key")
    assert app.ocpp_url.startswith("wss://")
    context = ssl.create_default_context(cafile=str(cert))

    async def scenario():
        async with websockets.connect(f"wss://127.0.0.1:{app.ports['ocpp']}/ocpp/CP-TLS",
                                      subprotocols=["ocpp1.6"], ssl=context,
                                      additional_headers=basic_auth("CP-TLS", "tls-profile-2-key")) as ws:
            answer = await exchange(ws, [2, "b", "BootNotification",
                                         {"chargePointVendor": "V", "chargePointModel": "M"}])
            assert answer[2]["status"] == "Accepted"

    run(scenario())
    wait_until(lambda: http(app, "GET", "/api/v1/chargepoints/CP-TLS")[1]["ocpp"]["online"] is False)
