"""Station identity at fleet scale: a restarted server with a few hundred registered
stations admits them all at once on OCPP and MQTT, checking each key with the keyed hash
(no KDF, no 503 for keys waiting to be verified). Times belong to the benchmark; this
test counts what was admitted and how."""

from __future__ import annotations

import asyncio

from tools.bench.fleet_restart import LIFTED, key_of, mqtt_connack, ocpp_admitted

STATIONS = 300


def test_a_restarted_server_admits_its_whole_fleet_at_once_without_a_kdf(start_server):
    app = start_server(LIFTED)
    ids = [f"CP-FLEET-{n:04d}" for n in range(STATIONS)]
    for cp_id in ids:  # as POST /api/v1/chargepoints does, without the HTTP round trips
        app.fleet.register(cp_id, "Accepted", auth_key=key_of(cp_id))
    app.stop()

    again = start_server(LIFTED)

    async def everyone():
        ocpp = await asyncio.gather(*(ocpp_admitted(again.ports["ocpp"], cp_id) for cp_id in ids))
        mqtt = await asyncio.gather(*(mqtt_connack(again.ports["mqtt"], cp_id) for cp_id in ids))
        return ocpp, mqtt

    ocpp, mqtt = asyncio.run(everyone())
    assert ocpp.count(101) == STATIONS, sorted(set(ocpp))
    assert mqtt.count(0) == STATIONS, sorted(set(mqtt))
    checks = again.fleet.keys.stats()
    assert checks["fast"] >= STATIONS and checks["legacy"] == 0 and checks["other_secret"] == 0
    assert again.central.counters["handshakes_admitted"] >= STATIONS
