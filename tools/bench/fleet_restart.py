"""How fast a restarted central system admits its whole registered fleet again.

    python -m tools.bench.fleet_restart [--stations 10000] [--concurrency 500]

Starts `python -m server` on 127.0.0.1 with a fresh data directory (per-address limits
lifted: every station comes from 127.0.0.1 here), registers N stations with their own
keys through the REST API, stops it (SIGTERM), starts it again on the same data,
then lets every station connect again at once (at most `--concurrency` handshakes in
flight): the OCPP WebSocket handshake with its Basic auth, then an MQTT 3.1.1 CONNECT
with its credentials. Prints one JSON object: registrations per second, the time until
the last station was admitted on each protocol, and the CPU time of the generator and of
the server (with its broker), so the report says which was the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets
from websockets.exceptions import InvalidStatus

from tools.loadgen import cpu_seconds, free_port, key_of

ROOT = Path(__file__).resolve().parents[2]
LIFTED = {"ocpp.handshake_rate_per_address": 0, "ocpp.max_connections_per_address": 0,
          "ocpp.max_unauthenticated_handshakes": 0, "http.station_rate_per_address": 0,
          "auth.rate_limit_per_second": 0}




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


async def _everyone(ports: dict, ids: list[str], concurrency: int) -> dict:
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

    ocpp_jobs = [limited("ocpp", lambda c: ocpp_admitted(ports["ocpp"], c), cp_id)
                 for cp_id in ids]
    mqtt_jobs = [limited("mqtt", lambda c: mqtt_connack(ports["mqtt"], c), cp_id)
                 for cp_id in ids]
    outcomes = await asyncio.gather(*(job for pair in zip(ocpp_jobs, mqtt_jobs) for job in pair))
    ocpp, mqtt = outcomes[0::2], outcomes[1::2]
    return {"ocpp_admitted": ocpp.count(101), "ocpp_last_s": round(last["ocpp"], 1),
            "ocpp_refusals": sorted({s for s in ocpp if s != 101}),
            "mqtt_admitted": mqtt.count(0), "mqtt_last_s": round(last["mqtt"], 1),
            "mqtt_refusals": sorted({s for s in mqtt if s != 0}),
            "all_back_s": round(time.perf_counter() - started, 1)}


def _server_process(data_dir: Path, ports: dict, token: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "server", "--data-dir", str(data_dir), "--ocpp-host",
            "127.0.0.1", "--ocpp-port", str(ports["ocpp"]), "--http-host", "127.0.0.1",
            "--http-port", str(ports["http"]), "--mqtt-port", str(ports["mqtt"]),
            "--log-level", "WARNING"]
    for key, value in LIFTED.items():
        args += ["--set", f"{key}={value}"]
    log = open(data_dir.parent / "server.log", "a")
    server = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env=dict(os.environ, PICOCHARGE_ADMIN_TOKEN=token))
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/api/v1/health",  # nosec B310
                                   timeout=5)
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.2)


def _register(ports: dict, token: str, ids: list[str]) -> None:
    for cp_id in ids:
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports['http']}/api/v1/chargepoints", method="POST",
            data=json.dumps({"id": cp_id, "auth_key": key_of(cp_id)}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=60).read()  # nosec B310


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()


def measure(stations: int, concurrency: int) -> dict:
    """The server runs in a process of its own (as in production: it has its own core
    here); this process is only the fleet."""

    ids = [f"CP-{n:05d}" for n in range(stations)]
    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="picocharge-fleet-") as tmp:
        data_dir = Path(tmp) / "var"
        ports = {name: free_port() for name in ("ocpp", "http", "mqtt")}
        server = _server_process(data_dir, ports, token)
        try:
            started = time.perf_counter()
            _register(ports, token, ids)
            register_s = time.perf_counter() - started
        finally:
            _stop(server)
        started = time.perf_counter()
        server = _server_process(data_dir, ports, token)
        try:
            up_s = time.perf_counter() - started
            server_cpu = cpu_seconds(server.pid)  # the server and its broker
            mine = cpu_seconds()
            result = asyncio.run(_everyone(ports, ids, concurrency))
            result.update(
                stations=stations, registrations_per_s=round(stations / register_s),
                restart_s=round(up_s, 1),
                generator_cpu_s=round(cpu_seconds() - mine, 1),
                server_cpu_s=round(cpu_seconds(server.pid) - server_cpu, 1),
                note="server (with its Mosquitto) and generator in processes of their own")
        finally:
            _stop(server)
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
