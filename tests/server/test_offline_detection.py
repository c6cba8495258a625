"""Offline detection: a dropped socket at once, a silent station within the configured
window, and the MQTT last will for telemetry presence. Each change is an event."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import paho.mqtt.client as mqtt

from tests.server.conftest import ahttp, http, raw_socket, register, run, station_key, wait_until


def test_station_whose_socket_drops_is_offline_in_under_one_second(server):
    register(server, "CP-DROP")

    async def scenario():
        async with raw_socket(server, "CP-DROP") as ws:
            await asyncio.sleep(0.1)
            assert server.fleet.get("CP-DROP")["ocpp_online"] == 1
            # Drop the TCP connection without a closing handshake.
            ws.transport.abort()
            dropped = time.monotonic()
            while server.fleet.get("CP-DROP")["ocpp_online"]:
                assert time.monotonic() - dropped < 1.0, "still online after 1 s"
                await asyncio.sleep(0.01)
        _, events = await ahttp(server, "GET", "/api/v1/chargepoints/CP-DROP/events?kind=ocpp_offline")
        assert events[0]["detail"]["reason"] == "connection closed"

    run(scenario())


def test_silent_station_is_offline_within_the_configured_window_and_back_on_activity(start_server):
    # heartbeat 1 s × factor 2 → offline after 2 s of silence (monitor checks every 0.2 s).
    app = start_server({"ocpp.heartbeat_interval": 1, "ocpp.offline_after_heartbeats": 2.0,
                        "ocpp.monitor_interval": 0.2})
    register(app, "CP-QUIET")

    async def scenario():
        async with raw_socket(app, "CP-QUIET") as ws:
            await ws.send('[2, "b", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]')
            await ws.recv()
            while app.fleet.get("CP-QUIET")["ocpp_online"]:
                await asyncio.sleep(0.02)
            await ws.send('[2, "h", "Heartbeat", {}]')
            await ws.recv()
            assert app.fleet.get("CP-QUIET")["ocpp_online"] == 1
        # the server records the closed connection (the last ocpp_offline) after the close
        await asyncio.to_thread(wait_until, lambda: not app.fleet.get("CP-QUIET")["ocpp_online"],
                                10, "the closed connection recorded")
        _, events = await ahttp(app, "GET", "/api/v1/chargepoints/CP-QUIET/events")
        kinds = [e["kind"] for e in reversed(events) if e["kind"].startswith("ocpp_")]
        assert kinds == ["ocpp_online", "ocpp_offline", "ocpp_online", "ocpp_offline"]
        silent = [e for e in events if e["kind"] == "ocpp_offline"][-1]
        assert silent["detail"]["reason"].startswith("silent for more than 2")
        # on the server's clock (its event times), from going online (just before the last
        # message, the BootNotification) to offline: the window plus a monitor period or so
        online = [e for e in events if e["kind"] == "ocpp_online"][-1]
        silent_for = (datetime.fromisoformat(silent["ts"]) - datetime.fromisoformat(online["ts"])).total_seconds()
        assert 2.0 <= silent_for < 2.0 + 1.0, silent_for

    run(scenario())


def test_mqtt_last_will_marks_telemetry_offline(server):
    register(server, "CP-WILL")
    port = server.ports["mqtt"]
    register(server, "CP-WILL", station_key("CP-WILL"))
    board = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="CP-WILL")
    board.username_pw_set("CP-WILL", station_key("CP-WILL"))
    board.reconnect_delay_set(0.1, 1)
    board.will_set("picocharge/CP-WILL/state", "offline", qos=1, retain=True)
    board.connect("127.0.0.1", port, keepalive=5)
    board.loop_start()
    wait_until(board.is_connected, timeout=10)
    board.publish("picocharge/CP-WILL/state", "online", qos=1, retain=True).wait_for_publish(5)
    wait_until(lambda: (server.fleet.get("CP-WILL") or {}).get("telemetry_online") == 1)
    board._sock.close()  # the board vanishes: no DISCONNECT, so the broker sends the will
    board.loop_stop()
    wait_until(lambda: server.fleet.get("CP-WILL")["telemetry_online"] == 0, timeout=10)
    _, events = http(server, "GET", "/api/v1/chargepoints/CP-WILL/events")
    assert [e["kind"] for e in events][:2] == ["telemetry_offline", "telemetry_online"]
    assert events[0]["detail"]["reason"] == "MQTT last will"
