"""A lean fleet generator: thousands of stations in one process, each speaking real OCPP
1.6-J on its own WebSocket with its own key and publishing MQTT telemetry on its own
connection with its own credentials, as boards do.

    python -m tools.loadgen --stations 2000 --interval 10 --hold 60 [--start-server]
                            [--ocpp ws://127.0.0.1:9000/ocpp --mqtt 127.0.0.1:1883
                             --api http://127.0.0.1:8080 --token ADMIN]

Each station: registers (REST, with its own key), connects (Basic auth), sends
BootNotification and StatusNotification, then every `--interval` seconds MeterValues
(energy, power, current, voltage) and an MQTT telemetry report (QoS 1, the contract's
keys), a Heartbeat now and then, and a StartTransaction/StopTransaction cycle every
`--session-every` intervals; it answers the server's CALLs (Accepted where a status is
asked, CALLERROR NotImplemented for what a generator cannot do). On a dropped
connection it reconnects and sends again what was not acknowledged, like a board.

It measures admission (connect → BootNotification Accepted; MQTT CONNACK), then during
the hold only: CALL → CALLRESULT latency, PUBLISH → PUBACK latency, drops, and loss
(telemetry acknowledged by the broker minus rows the server stored, read from its API),
and its own CPU and the server's when it started it, so a report says which one was the
limit. `--start-server` starts `python -m server` on 127.0.0.1 with per-address limits
lifted (every station comes from 127.0.0.1 here). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = {  # what a station answers to the central system's CALLs
    "RemoteStartTransaction": {"status": "Accepted"}, "RemoteStopTransaction": {"status": "Accepted"},
    "ChangeConfiguration": {"status": "Accepted"}, "Reset": {"status": "Accepted"},
    "UnlockConnector": {"status": "Unlocked"}, "ChangeAvailability": {"status": "Accepted"},
    "ClearCache": {"status": "Accepted"}, "TriggerMessage": {"status": "Accepted"},
    "DataTransfer": {"status": "Accepted"}, "GetConfiguration": {"configurationKey": []},
}


def key_of(cp_id: str) -> str:
    return "k" + hashlib.sha256(cp_id.encode()).hexdigest()[:31]


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "p50_ms": round(pick(0.50), 1), "p95_ms": round(pick(0.95), 1),
            "p99_ms": round(pick(0.99), 1), "max_ms": round(ordered[-1], 1)}


class Stats:
    def __init__(self) -> None:
        self.holding = False
        self.stopping = False  # stations stop reporting (the end of a run)
        self.ocpp_ms: list[float] = []
        self.mqtt_ms: list[float] = []
        self.admitted_ocpp: dict[str, float] = {}
        self.admitted_mqtt: dict[str, float] = {}
        self.begun: dict[str, float] = {}  # station → when it started, since the run's start
        self.ocpp_drops = 0  # a session that was up (OCPP: booted) and ended
        self.mqtt_drops = 0
        self.ocpp_failed_connects = 0  # an attempt that never got that far (refused, timed out)
        self.mqtt_failed_connects = 0
        self.errors: dict[str, int] = {}
        self.acked = 0  # telemetry PUBACKed (during the whole run)
        self.calls_answered = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


# -- MQTT 3.1.1, the little a station needs -------------------------------------------
def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _packet(kind: int, body: bytes) -> bytes:
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            return bytes([kind]) + encoded + body


async def _read_packet(reader) -> tuple[int, bytes]:
    kind = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return kind, await reader.readexactly(length)


class MqttStation:
    def __init__(self, cp_id: str, host: str, port: int, stats: Stats, prefix: str) -> None:
        self.cp_id, self.host, self.port, self.stats = cp_id, host, port, stats
        self.topic = f"{prefix}/{cp_id}/telemetry"
        self.writer = None
        self.pending: dict[int, tuple[bytes, float]] = {}  # packet id → (payload, sent at)
        self.next_id = 1
        self.connected = asyncio.Event()

    async def run(self, started: float) -> None:
        while True:
            up = False
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                body = (_utf8("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60)
                        + _utf8(self.cp_id) + _utf8(self.cp_id) + _utf8(key_of(self.cp_id)))
                writer.write(_packet(0x10, body))
                await writer.drain()
                kind, answer = await asyncio.wait_for(_read_packet(reader), 120)
                if kind != 0x20 or answer[1] != 0:
                    self.stats.error(f"mqtt connack {answer[1] if len(answer) > 1 else kind}")
                    writer.close()
                    await asyncio.sleep(2 + random.random() * 3)
                    continue
                self.writer = writer
                self.stats.admitted_mqtt.setdefault(self.cp_id, time.monotonic() - started)
                self.connected.set()
                up = True
                for packet_id, (payload, _) in list(self.pending.items()):  # resend unacked
                    self._send_publish(packet_id, payload, dup=True)
                await self._read(reader)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                pass
            self.connected.clear()
            self.writer = None
            if up:
                self.stats.mqtt_drops += 1
            else:
                self.stats.mqtt_failed_connects += 1
            await asyncio.sleep(1 + random.random() * 2)

    async def _read(self, reader) -> None:
        while True:
            kind, body = await _read_packet(reader)
            if kind & 0xF0 == 0x40:  # PUBACK
                packet_id = struct.unpack("!H", body[:2])[0]
                entry = self.pending.pop(packet_id, None)
                if entry is not None:
                    self.stats.acked += 1
                    if self.stats.holding:
                        self.stats.mqtt_ms.append((time.monotonic() - entry[1]) * 1000)

    def _send_publish(self, packet_id: int, payload: bytes, dup: bool = False) -> None:
        body = _utf8(self.topic) + struct.pack("!H", packet_id) + payload
        self.writer.write(_packet(0x32 | (0x08 if dup else 0), body))
        self.pending[packet_id] = (payload, time.monotonic())

    def publish(self, report: dict) -> None:
        if self.writer is None:
            return  # a board buffers; the generator counts it as not sent
        packet_id = self.next_id
        self.next_id = self.next_id % 65535 + 1
        self._send_publish(packet_id, json.dumps(report, separators=(",", ":")).encode())

    def ping(self) -> None:
        if self.writer is not None:
            self.writer.write(b"\xc0\x00")


# -- OCPP -------------------------------------------------------------------------------
class OcppStation:
    def __init__(self, cp_id: str, url: str, stats: Stats) -> None:
        self.cp_id, self.url, self.stats = cp_id, url, stats
        self.ws = None
        self.waiting: dict[str, asyncio.Future] = {}
        self.booted = asyncio.Event()

    async def call(self, action: str, payload: dict, timeout: float = 60):
        uid = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self.waiting[uid] = future
        sent = time.monotonic()
        await self.ws.send(json.dumps([2, uid, action, payload]))
        try:
            answer = await asyncio.wait_for(future, timeout)
        finally:
            self.waiting.pop(uid, None)
        if self.stats.holding:
            self.stats.ocpp_ms.append((time.monotonic() - sent) * 1000)
        if answer[0] != 3:
            self.stats.error(f"ocpp {action} {answer[2]}")
            return None
        return answer[2]

    async def _reader(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame[0] in (3, 4):
                future = self.waiting.get(frame[1])
                if future is not None and not future.done():
                    future.set_result(frame)
            elif frame[0] == 2:
                answer = ANSWERS.get(frame[2])
                reply = ([3, frame[1], answer] if answer is not None
                         else [4, frame[1], "NotImplemented", "not in the generator", {}])
                self.stats.calls_answered += 1
                await self.ws.send(json.dumps(reply))

    async def session(self, started: float, work) -> None:
        auth = base64.b64encode(f"{self.cp_id}:{key_of(self.cp_id)}".encode()).decode()
        while True:
            try:
                async with websockets.connect(f"{self.url}/{self.cp_id}", subprotocols=["ocpp1.6"],
                                              additional_headers={"Authorization": "Basic " + auth},
                                              open_timeout=120, ping_interval=None) as ws:
                    self.ws = ws
                    reader = asyncio.create_task(self._reader())
                    boot = await self.call("BootNotification", {
                        "chargePointVendor": "PicoCharge", "chargePointModel": "loadgen"})
                    if not boot or boot.get("status") != "Accepted":
                        self.stats.error("boot not accepted")
                        reader.cancel()
                        await asyncio.sleep(5)
                        continue
                    self.stats.admitted_ocpp.setdefault(self.cp_id, time.monotonic() - started)
                    await self.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                                           "status": "Available"})
                    self.booted.set()
                    await work(self)
            except (OSError, websockets.WebSocketException, TimeoutError):
                pass
            if self.booted.is_set():
                self.stats.ocpp_drops += 1
            else:
                self.stats.ocpp_failed_connects += 1
            self.booted.clear()
            await asyncio.sleep(1 + random.random() * 2)


async def station(cp_id: str, opts, stats: Stats, started: float) -> None:
    stats.begun[cp_id] = time.monotonic() - started
    if opts.register_live:  # a first registration, then the station comes online at once
        await asyncio.get_running_loop().run_in_executor(
            None, api, opts.api, opts.token, "POST", "/api/v1/chargepoints",
            {"id": cp_id, "auth_key": key_of(cp_id)})
    ocpp = OcppStation(cp_id, opts.ocpp, stats)
    mqtt = MqttStation(cp_id, opts.mqtt_host, opts.mqtt_port, stats, opts.prefix)
    asyncio.create_task(mqtt.run(started))
    state = {"wh": 0, "seq": 0, "tx": None, "tick": 0}

    async def work(link: OcppStation) -> None:
        await asyncio.sleep(random.random() * opts.interval)  # spread the fleet over the interval
        while not stats.stopping:
            state["tick"] += 1
            state["wh"] += 20
            charging = state["tx"] is not None
            sampled = [{"value": str(state["wh"]), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                       {"value": "7200" if charging else "0", "measurand": "Power.Active.Import", "unit": "W"},
                       {"value": "31.3" if charging else "0", "measurand": "Current.Import", "unit": "A"},
                       {"value": "230.1", "measurand": "Voltage", "unit": "V"}]
            payload = {"connectorId": 1, "meterValue": [{"timestamp": now_iso(), "sampledValue": sampled}]}
            if charging:
                payload["transactionId"] = state["tx"]
            await link.call("MeterValues", payload)
            state["seq"] += 1
            mqtt.publish({"ts": int(time.time()), "seq": state["seq"], "v": 230.1,
                          "a": 31.3 if charging else 0.0, "w": 7200 if charging else 0,
                          "wh": state["wh"], "t": 21.5, "rh": 40, "cp": "C" if charging else "A",
                          "st": "Charging" if charging else "Available"})
            if state["tick"] % 6 == 0:
                await link.call("Heartbeat", {})
                mqtt.ping()
            if state["tick"] % opts.session_every == 0:
                if charging:
                    await link.call("StopTransaction", {"transactionId": state["tx"], "meterStop": state["wh"],
                                                        "timestamp": now_iso(), "reason": "EVDisconnected"})
                    state["tx"] = None
                else:
                    started_tx = await link.call("StartTransaction", {
                        "connectorId": 1, "idTag": "LOADGEN", "meterStart": state["wh"], "timestamp": now_iso()})
                    state["tx"] = started_tx.get("transactionId") if started_tx else None
            await asyncio.sleep(opts.interval)
        await asyncio.sleep(3600)  # stopped: keep the connections, send nothing

    await ocpp.session(started, work)


def api(base: str, token: str, method: str, path: str, body=None):
    request = urllib.request.Request(base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:  # nosec B310
        return json.loads(response.read() or b"null")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_open_files(wanted: int) -> None:
    """Lift this process's open-file limit to `wanted` where allowed (the hard limit too
    when running as root); say so when it stays lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        print(f"loadgen: open files limited to {hard}, {wanted} wanted: raise `ulimit -Hn`",
              file=sys.stderr)


def start_server(tmp: Path) -> tuple[subprocess.Popen, dict]:
    token = base64.urlsafe_b64encode(os.urandom(32)).decode()
    ports = {"ocpp": free_port(), "http": free_port(), "mqtt": free_port()}
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "server", "--data-dir", str(tmp / "var"), "--ocpp-host", "127.0.0.1",
         "--ocpp-port", str(ports["ocpp"]), "--http-host", "127.0.0.1", "--http-port", str(ports["http"]),
         "--mqtt-port", str(ports["mqtt"]), "--log-level", "WARNING",
         "--set", "ocpp.handshake_rate_per_address=0", "--set", "ocpp.max_connections_per_address=0",
         "--set", "ocpp.max_unauthenticated_handshakes=0", "--set", "http.station_rate_per_address=0",
         "--set", "ocpp.rate_limit_per_second=0", "--set", "auth.rate_limit_per_second=0"],
        cwd=ROOT, env=dict(os.environ, PICOCHARGE_ADMIN_TOKEN=token), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{ports['http']}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/api/v1/health", timeout=5)  # nosec B310
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: see {tmp / 'server.log'}") from None
            time.sleep(0.2)
    return server, {"ocpp": f"ws://127.0.0.1:{ports['ocpp']}/ocpp", "mqtt": f"127.0.0.1:{ports['mqtt']}",
                    "api": base, "token": token}


def cpu_seconds(pid: int | None = None) -> float:
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    import psutil
    process = psutil.Process(pid)
    total = sum(process.cpu_times()[:2])
    for child in process.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


async def run(opts) -> dict:
    stats = Stats()
    ids = [f"{opts.prefix_id}{n:05d}" for n in range(opts.stations)]
    for cp_id in ([] if opts.register_live else ids):  # registration: each with its own key
        api(opts.api, opts.token, "POST", "/api/v1/chargepoints", {"id": cp_id, "auth_key": key_of(cp_id)})
    stored_at_start = api(opts.api, opts.token, "GET", "/api/v1/stats")["telemetry_stored"]
    started = time.monotonic()
    for n, cp_id in enumerate(ids):
        asyncio.create_task(station(cp_id, opts, stats, started))
        if opts.ramp and (n + 1) % opts.ramp == 0:
            await asyncio.sleep(1)
    deadline = started + opts.admit_timeout
    while (len(stats.admitted_ocpp) < opts.stations or len(stats.admitted_mqtt) < opts.stations) \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    admission = {"ocpp_admitted": len(stats.admitted_ocpp), "mqtt_admitted": len(stats.admitted_mqtt),
                 "ocpp_last_s": round(max(stats.admitted_ocpp.values(), default=0), 1),
                 "mqtt_last_s": round(max(stats.admitted_mqtt.values(), default=0), 1),
                 # each station's own wait: from its start (with --register-live, its
                 # registration) to BootNotification Accepted / CONNACK
                 "ocpp_wait": percentiles([1000 * (at - stats.begun[cp]) for cp, at
                                             in stats.admitted_ocpp.items()]),
                 "mqtt_wait": percentiles([1000 * (at - stats.begun[cp]) for cp, at
                                             in stats.admitted_mqtt.items()])}
    acked_before = stats.acked
    drops_before = (stats.ocpp_drops, stats.mqtt_drops)
    gen_cpu, server_cpu = cpu_seconds(), cpu_seconds(opts.server_pid) if opts.server_pid else None
    stats.holding = True
    await asyncio.sleep(opts.hold)
    stats.holding = False
    gen_cpu = cpu_seconds() - gen_cpu
    if opts.server_pid:
        server_cpu = cpu_seconds(opts.server_pid) - server_cpu
    # stop reporting, then wait until what the broker acknowledged is stored (at most a
    # minute: what is still missing then is lost)
    stats.stopping = True
    await asyncio.sleep(min(opts.interval, 5))  # the reports already on their way
    deadline = time.monotonic() + 60
    while True:
        stored = api(opts.api, opts.token, "GET", "/api/v1/stats")["telemetry_stored"] - stored_at_start
        if stored >= stats.acked or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    return {"stations": opts.stations, "interval_s": opts.interval, "hold_s": opts.hold,
            "admission": admission,
            "ocpp_call_to_result": percentiles(stats.ocpp_ms),
            "mqtt_publish_to_puback": percentiles(stats.mqtt_ms),
            "drops_during_hold": {"ocpp": stats.ocpp_drops - drops_before[0],
                                  "mqtt": stats.mqtt_drops - drops_before[1]},
            # from the first station's start on: sessions that were up and went down, and
            # attempts that never got up (refused, reset, timed out: admission's cost)
            "drops_in_all": {"ocpp": stats.ocpp_drops, "mqtt": stats.mqtt_drops},
            "failed_connects_in_all": {"ocpp": stats.ocpp_failed_connects,
                                       "mqtt": stats.mqtt_failed_connects},
            "telemetry_acked_during_hold": stats.acked - acked_before,
            "telemetry_acked_in_all": stats.acked, "telemetry_stored_in_all": stored,
            "telemetry_lost": max(0, stats.acked - stored),
            "calls_answered": stats.calls_answered, "errors": stats.errors,
            "cpu_share_of_one_core_during_hold": {
                "generator": round(gen_cpu / opts.hold, 2),
                "server_with_broker": round(server_cpu / opts.hold, 2) if server_cpu is not None else None},
            "limit": "the generator" if gen_cpu >= 0.9 * opts.hold else "not the generator"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between reports")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds measured once admitted")
    parser.add_argument("--ramp", type=int, default=200, help="stations started per second (0: all at once)")
    parser.add_argument("--session-every", type=int, default=30, help="intervals between charging sessions")
    parser.add_argument("--admit-timeout", type=float, default=300.0)
    parser.add_argument("--start-server", action="store_true")
    parser.add_argument("--register-live", action="store_true",
                        help="register each station through the REST API as it starts (first "
                             "registrations at the ramp's rate) instead of all before the clock")
    parser.add_argument("--ocpp", default="ws://127.0.0.1:9000/ocpp")
    parser.add_argument("--mqtt", default="127.0.0.1:1883")
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--token", default=os.environ.get("PICOCHARGE_ADMIN_TOKEN", ""))
    parser.add_argument("--prefix", default="picocharge", help="MQTT topic prefix")
    parser.add_argument("--prefix-id", default="LG-", help="station ids: PREFIX00000, PREFIX00001, ...")
    opts = parser.parse_args(argv)
    opts.server_pid = None
    server = None
    # two sockets per station here, and as many in the server and its broker (which inherit it)
    raise_open_files(2 * opts.stations + 1024)
    with tempfile.TemporaryDirectory(prefix="picocharge-loadgen-") as tmp:
        try:
            if opts.start_server:
                server, target = start_server(Path(tmp))
                opts.server_pid = server.pid
                opts.ocpp, opts.mqtt, opts.api, opts.token = (target["ocpp"], target["mqtt"],
                                                              target["api"], target["token"])
            opts.mqtt_host, port = opts.mqtt.rsplit(":", 1)
            opts.mqtt_port = int(port)
            result = asyncio.run(run(opts))
        finally:
            if server is not None:
                server.terminate()
                try:
                    server.wait(60)
                except subprocess.TimeoutExpired:
                    server.kill()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
