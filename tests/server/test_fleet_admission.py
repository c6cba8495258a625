"""Station identity at fleet scale: a restarted server with a few hundred registered
stations admits them all at once on OCPP and MQTT, checking each key with the keyed hash
(no KDF, no 503 for keys waiting to be verified). Times belong to the benchmark; this
test counts what was admitted and how."""

from __future__ import annotations

import asyncio
import struct

import websockets
from websockets.exceptions import InvalidStatus

from tests.server.conftest import basic_auth, ocpp_url, station_key

STATIONS = 300
LIFTED = {"ocpp.handshake_rate_per_address": 0, "ocpp.max_connections_per_address": 0,
          "ocpp.max_unauthenticated_handshakes": 0}


async def ocpp_admitted(app, cp_id: str) -> int:
    try:
        ws = await websockets.connect(ocpp_url(app, cp_id), subprotocols=["ocpp1.6"],
                                      additional_headers=basic_auth(cp_id, station_key(cp_id)),
                                      open_timeout=120)
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


async def mqtt_connack(port: int, cp_id: str) -> int:
    """The CONNACK return code a station gets (MQTT 3.1.1 CONNECT with its credentials)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 60)
    try:
        body = (_mqtt_string("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30)
                + _mqtt_string(cp_id) + _mqtt_string(cp_id) + _mqtt_string(station_key(cp_id)))
        writer.write(bytes([0x10, len(body)]) + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.readexactly(4), 60)
        assert answer[0] == 0x20, answer
        return answer[3]
    finally:
        writer.close()


def test_a_restarted_server_admits_its_whole_fleet_at_once_without_a_kdf(start_server):
    app = start_server(LIFTED)
    ids = [f"CP-FLEET-{n:04d}" for n in range(STATIONS)]
    for cp_id in ids:  # as POST /api/v1/chargepoints does, without the HTTP round trips
        app.fleet.register(cp_id, "Accepted", auth_key=station_key(cp_id))
    app.stop()

    again = start_server(LIFTED)

    async def everyone():
        ocpp = await asyncio.gather(*(ocpp_admitted(again, cp_id) for cp_id in ids))
        mqtt = await asyncio.gather(*(mqtt_connack(again.ports["mqtt"], cp_id) for cp_id in ids))
        return ocpp, mqtt

    ocpp, mqtt = asyncio.run(everyone())
    assert ocpp.count(101) == STATIONS, sorted(set(ocpp))
    assert mqtt.count(0) == STATIONS, sorted(set(mqtt))
    checks = again.fleet.keys.stats()
    assert checks["fast"] >= STATIONS and checks["legacy"] == 0 and checks["other_secret"] == 0
    assert again.central.counters["handshakes_admitted"] >= STATIONS
