"""How fast a restarted central system admits its whole registered fleet again.

    python -m tools.bench.fleet_restart [--stations 10000] [--concurrency 500]

Starts the server in this process on 127.0.0.1 with a fresh data directory (per-address
limits lifted: every station comes from 127.0.0.1 here), registers N stations with their
own keys (as POST /api/v1/chargepoints does), stops it, starts it again on the same data,
then lets every station connect again at once (at most `--concurrency` handshakes in
flight): the OCPP WebSocket handshake with its Basic auth, then an MQTT 3.1.1 CONNECT
with its credentials. Prints one JSON object: registrations per second, the time until
the last station was admitted on each protocol, how the keys were checked, and this
process's CPU time (generator and server share it: the report says so).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import resource
import struct
import tempfile
import time
from pathlib import Path

import websockets
from websockets.exceptions import InvalidStatus

from server.app import Application
from server.config import load_config

LIFTED = {"ocpp.handshake_rate_per_address": 0, "ocpp.max_connections_per_address": 0,
          "ocpp.max_unauthenticated_handshakes": 0, "http.station_rate_per_address": 0}


def key_of(cp_id: str) -> str:
    return "k" + hashlib.sha256(cp_id.encode()).hexdigest()[:31]


def _config(data_dir: Path):
    return load_config(None, environ={}, overrides={
        "server.data_dir": str(data_dir), "ocpp.host": "127.0.0.1", "ocpp.port": 0,
        "http.host": "127.0.0.1", "http.port": 0, "mqtt.embedded_port": 0,
        "auth.admin_token": base64.b64encode(hashlib.sha256(b"bench").digest()).decode(),
        **LIFTED})


async def ocpp_admitted(port: int, cp_id: str) -> int:
    auth = base64.b64encode(f"{cp_id}:{key_of(cp_id)}".encode()).decode()
    try:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ocpp/{cp_id}",
                                      subprotocols=["ocpp1.6"], open_timeout=300,
                                      additional_headers={"Authorization": "Basic " + auth})
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


async def mqtt_connack(port: int, cp_id: str) -> int:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 300)
    try:
        body = (_utf8("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60) + _utf8(cp_id)
                + _utf8(cp_id) + _utf8(key_of(cp_id)))
        writer.write(bytes([0x10, len(body)]) + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.readexactly(4), 300)
        return answer[3] if answer[0] == 0x20 else -1
    finally:
        writer.close()


async def _everyone(app, ids: list[str], concurrency: int) -> dict:
    """Every station reconnects on both protocols at once, as boards do after a restart;
    the time of the last admission on each."""
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    last = {"ocpp": 0.0, "mqtt": 0.0}

    async def limited(kind, coro_fn, cp_id):
        async with gate:
            outcome = await coro_fn(cp_id)
        last[kind] = max(last[kind], time.perf_counter() - started)
        return outcome

    ocpp_jobs = [limited("ocpp", lambda c: ocpp_admitted(app.ports["ocpp"], c), cp_id)
                 for cp_id in ids]
    mqtt_jobs = [limited("mqtt", lambda c: mqtt_connack(app.ports["mqtt"], c), cp_id)
                 for cp_id in ids]
    outcomes = await asyncio.gather(*(job for pair in zip(ocpp_jobs, mqtt_jobs) for job in pair))
    ocpp, mqtt = outcomes[0::2], outcomes[1::2]
    return {"ocpp_admitted": ocpp.count(101), "ocpp_last_s": round(last["ocpp"], 1),
            "ocpp_refusals": sorted({s for s in ocpp if s != 101}),
            "mqtt_admitted": mqtt.count(0), "mqtt_last_s": round(last["mqtt"], 1),
            "mqtt_refusals": sorted({s for s in mqtt if s != 0}),
            "all_back_s": round(time.perf_counter() - started, 1)}


def measure(stations: int, concurrency: int) -> dict:
    ids = [f"CP-{n:05d}" for n in range(stations)]
    with tempfile.TemporaryDirectory(prefix="picocharge-fleet-") as tmp:
        app = Application(_config(Path(tmp))).start()
        try:
            started = time.perf_counter()
            for cp_id in ids:
                app.fleet.register(cp_id, "Accepted", auth_key=key_of(cp_id))
            register_s = time.perf_counter() - started
        finally:
            app.stop()
        started = time.perf_counter()
        again = Application(_config(Path(tmp))).start()
        try:
            up_s = time.perf_counter() - started
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            result = asyncio.run(_everyone(again, ids, concurrency))
            after = resource.getrusage(resource.RUSAGE_SELF)
            result.update(stations=stations, registrations_per_s=round(stations / register_s),
                          restart_s=round(up_s, 1), key_checks=again.fleet.keys.stats(),
                          process_cpu_s=round(after.ru_utime + after.ru_stime
                                              - cpu.ru_utime - cpu.ru_stime, 1),
                          note="generator and server in one process on this machine; the "
                               "broker (Mosquitto) is a process of its own")
        finally:
            again.stop()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=500)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.stations, args.concurrency)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
