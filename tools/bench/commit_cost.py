"""What answering after commit costs: transaction messages (StartTransaction, MeterValues,
StopTransaction) sent as fast as each station gets its answers, by 1, 50 and 200 stations
at once, against the central system with ``store.synchronous`` FULL (every commit fsynced
before its answers) and NORMAL (committed, not fsynced). Reports messages/s, the answer
latency p50/p99 and how many messages shared one commit (group commit).

    python -m tools.bench.commit_cost [--seconds 8] [--stations 1,50,200]

Part of ``make bench``; standalone it prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "commit-cost-bench-admin-token-0123456789"
KEY = "commit-cost-station-key"


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def _stats(api: str) -> dict:
    request = urllib.request.Request(f"{api}/api/v1/stats",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


async def _station(port: int, cp_id: str, deadline: float, latencies: list[float]) -> None:
    auth = base64.b64encode(f"{cp_id}:{KEY}".encode()).decode()
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}/ocpp/{cp_id}", subprotocols=["ocpp1.6"],
                                  additional_headers={"Authorization": f"Basic {auth}"},
                                  ping_interval=None, open_timeout=60) as ws:
        counter = 0

        async def call(action: str, payload: dict, timed: bool = True) -> dict:
            nonlocal counter
            counter += 1
            began = time.perf_counter()
            await ws.send(json.dumps([2, str(counter), action, payload]))
            answer = json.loads(await ws.recv())
            if timed:
                latencies.append((time.perf_counter() - began) * 1000)
            if answer[0] != 3:
                raise RuntimeError(f"{action}: {answer}")
            return answer[2]

        await call("BootNotification", {"chargePointVendor": "Bench", "chargePointModel": "Commit"},
                   timed=False)
        meter = 0
        while time.monotonic() < deadline:
            meter += 1000
            stamp = f"2026-11-30T00:00:{counter % 60:02d}.{counter:06d}Z"
            tx = (await call("StartTransaction", {"connectorId": 1, "idTag": "BENCH",
                                                  "meterStart": meter, "timestamp": stamp}))
            tx_id = tx["transactionId"]
            await call("MeterValues", {"connectorId": 1, "transactionId": tx_id, "meterValue": [
                {"timestamp": stamp, "sampledValue": [{"value": str(meter + 500)}]}]})
            await call("StopTransaction", {"transactionId": tx_id, "meterStop": meter + 900,
                                           "timestamp": stamp})


async def _load(port: int, stations: int, seconds: float, prefix: str) -> tuple[list[float], float]:
    latencies: list[float] = []
    # everyone connects first, then the clock starts
    deadline = time.monotonic() + seconds + 30
    began = time.monotonic()
    tasks = [asyncio.create_task(_station(port, f"{prefix}-{n}", deadline, latencies))
             for n in range(stations)]
    await asyncio.sleep(0)
    while len(latencies) == 0 and time.monotonic() - began < 30:
        await asyncio.sleep(0.05)
    start, count0 = time.monotonic(), len(latencies)
    await asyncio.sleep(seconds)
    measured = latencies[count0:]
    elapsed = time.monotonic() - start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return measured, elapsed


def run(seconds: float = 8.0, steps=(1, 50, 200), modes=("FULL", "NORMAL")) -> list[dict]:
    rows = []
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="picocharge-commit-") as tmp:
            data = Path(tmp) / "var"
            log = open(Path(tmp) / "server.log", "w")
            env = dict(os.environ, PICOCHARGE_ADMIN_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
            proc = subprocess.Popen(
                [sys.executable, "-m", "server", "--data-dir", str(data), "--ocpp-host",
                 "127.0.0.1", "--ocpp-port", "0", "--http-host", "127.0.0.1", "--http-port", "0",
                 "--mqtt-port", "0", "--auto-register", "--log-level", "WARNING",
                 "--set", f"store.synchronous={mode}", "--set", "ocpp.rate_limit_per_second=0",
                 "--set", "ocpp.handshake_rate_per_address=0",
                 "--set", "ocpp.max_connections_per_address=0",
                 "--set", "http.station_rate_per_address=0"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                ports = None
                for _ in range(600):
                    text = (Path(tmp) / "server.log").read_text()
                    for line in text.splitlines():
                        if line.startswith("PORTS "):
                            ports = dict(part.split("=") for part in line.split()[1:])
                    if ports or proc.poll() is not None:
                        break
                    time.sleep(0.1)
                if not ports:
                    raise RuntimeError("server did not start: " + text[-2000:])
                api = f"http://127.0.0.1:{ports['http']}"
                for stations in steps:
                    before = _stats(api)["store"]
                    latencies, elapsed = asyncio.run(
                        _load(int(ports["ocpp"]), stations, seconds, f"{mode}{stations}"))
                    after = _stats(api)["store"]
                    batches = after["batches"] - before["batches"]
                    rows.append({
                        "synchronous": mode, "stations": stations,
                        "messages_per_s": round(len(latencies) / elapsed, 1),
                        "p50_ms": round(_percentile(latencies, 50), 2),
                        "p99_ms": round(_percentile(latencies, 99), 2),
                        "messages_per_commit": round(len(latencies) / batches, 1) if batches else None,
                    })
            finally:
                proc.terminate()
                proc.wait(30)
                log.close()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| synchronous | stations | transaction messages/s | answer p50 / p99 ms | "
             "messages per commit |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['synchronous']} | {r['stations']} | {r['messages_per_s']} | "
                     f"{r['p50_ms']} / {r['p99_ms']} | {r['messages_per_commit']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--stations", default="1,50,200")
    args = parser.parse_args(argv)
    rows = run(args.seconds, [int(s) for s in args.stations.split(",")])
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
