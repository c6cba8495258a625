"""Fleet simulator: N charge points, each the real firmware on the hardware stand-ins.

    python -m tools.sim --stations 100 --server ws://127.0.0.1:9000/ocpp \\
                        --mqtt mqtt://127.0.0.1:1883 --duration 600

Every station is the firmware's `App` (firmware/lib/app.py: station, OCPP charge point,
MQTT telemetry) built on its own simulated world (`tools/stubs/simworld.py`) and its own
flash directory, with a simulated EV that arrives, presents an idTag, charges along a
curve, suspends now and then, sometimes faults (over-temperature), is stopped or unplugs.
Stations run as asyncio tasks in worker processes (`--workers`, default one per 250
stations, started as the fleet grows). The size matters: too many processes fight over
two cores; at 2 000 stations with telemetry every 10 s on the embedded broker, one worker
gave an OCPP p99 of about 1 s, 8 workers of 250 98 ms, 20 workers of 100 936 ms (measured
while the telemetry's QoS 1 publish still blocked its worker until the PUBACK; the MQTT
link awaits it now, see firmware/lib/mqtt_link.py).

`--runtime micropython --stations k` instead boots k separate MicroPython Unix-port
boards (tools.board) for fidelity checks.

Every station has an AuthorizationKey derived from `--key-secret` and its id
(`station_key`; OCPP Basic auth, and its MQTT username/password, which the server's embedded
broker requires), so a server with `ocpp.auto_register` stores it at the first
BootNotification; `--api URL` (the server's /api/v1, `--api-token` if it needs one) registers
every station with its key before the fleet starts.

Progress goes to stderr once a second: connected, sessions, messages/s, errors. With
`--json` (used by `python -m tools.bench`) step events go to stdout as JSON lines:
`--schedule 10,20,40 --hold 60` grows the fleet step by step and reports each step's
window (OCPP CALL->CALLRESULT latency percentiles, telemetry acknowledged by the broker,
transactions, messages/s).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIONS_PER_WORKER = 250
SIM_MAINS_HZ = 10000
SIM_PILOT_HZ = 10000
ID_TAGS = ["SIMTAG%04d" % i for i in range(64)]


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(q / 100 * (len(values) - 1)))))
    return round(values[k], 2)


# --------------------------------------------------------------------------------------
# One worker process: a share of the fleet on one event loop.
# --------------------------------------------------------------------------------------
def host_imports():
    """Put the firmware and the stand-ins on the path as the board runner does."""
    for path in (ROOT / "tools" / "stubs_cpython", ROOT / "tools" / "stubs",
                 ROOT / ".cache" / "mplib", ROOT / "firmware" / "lib"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    import gc

    import hostcompat  # noqa: F401

    # The firmware calls gc.collect() to fight fragmentation in a Pico W's heap; on CPython,
    # with thousands of boards in one process, each call walks the whole process. CPython's
    # own collector keeps running; only the firmware's explicit calls become no-ops here.
    gc.collect = lambda generation=2: 0
    # The firmware drops feature modules from sys.modules when idle, so a board's heap
    # holds only the code in use. Here one copy of the code serves every station, and a
    # drop would make the next station compile it again: keep the module objects and hand
    # them back on re-import (the firmware keeps no state at module level, by rule).
    if not any(isinstance(f, SharedFirmwareModules) for f in sys.meta_path):
        sys.meta_path.insert(0, SharedFirmwareModules((ROOT / "firmware", ROOT / ".cache" / "mplib")))


class SharedFirmwareModules:
    """Meta-path finder: firmware modules are executed once per process and re-inserted
    from this cache when the firmware imports them again after dropping them."""

    def __init__(self, roots):
        self.roots = tuple(str(r) + os.sep for r in roots)
        self.cache = {}

    def find_spec(self, name, path=None, target=None):
        import importlib.machinery
        import importlib.util

        if name in self.cache:
            return importlib.util.spec_from_loader(name, self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not (spec.origin or "").startswith(self.roots):
            return None
        spec.loader = _Remembering(spec.loader, self.cache)
        return spec

    def create_module(self, spec):
        return self.cache[spec.name]

    def exec_module(self, module):
        pass  # executed once already


class _Remembering:
    def __init__(self, loader, cache):
        self.loader = loader
        self.cache = cache

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.cache[module.__name__] = module


class Stats:
    """Counters for one reporting window; latency samples are bounded (reservoir)."""

    LIMIT = 20000

    def __init__(self, rng):
        self.rng = rng
        self.total_calls = 0  # never reset: the progress line's rate
        self.reset()

    def reset(self):
        self.calls = 0
        self.errors = 0
        self.timeouts = 0
        self.latencies = []
        self.seen = 0
        self.started = time.monotonic()
        self.telemetry_base = None

    def call_done(self, action, ms, outcome):
        self.calls += 1
        self.total_calls += 1
        if outcome == "timeout":
            self.timeouts += 1
        elif outcome != "ok":
            self.errors += 1
        self.seen += 1
        if len(self.latencies) < self.LIMIT:
            self.latencies.append(ms)
        else:
            k = self.rng.randrange(self.seen)
            if k < self.LIMIT:
                self.latencies[k] = ms


class SimStation:
    """One simulated charging station: world + flash + the firmware App + an EV."""

    def __init__(self, fleet, index):
        import dht as dht_stub
        import machine as machine_stub
        import network as network_stub
        import ntptime as ntptime_stub
        import simworld
        from storage import Flash

        opts = fleet.opts
        self.fleet = fleet
        self.cp_id = "%s%05d" % (opts.id_prefix, index)
        self.rng = random.Random(opts.seed * 100003 + index)
        self.world = simworld.World(name=self.cp_id, seed=opts.seed * 7919 + index, dht_blocking_ms=0)
        self.world.wifi_join_ms = 0
        self.world.mains_hz = SIM_MAINS_HZ
        self.world.pilot_hz = SIM_PILOT_HZ
        self.world.ambient_c = self.rng.uniform(12, 30)
        self.world.reset_handler = self.on_reset
        root = fleet.flash_root / self.cp_id
        root.mkdir(parents=True, exist_ok=True)
        self.flash = Flash(str(root))
        self.flash.write_json("config.json", fleet.station_config(self.cp_id))
        self.modules = (machine_stub.bind(self.world), network_stub.bind(self.world),
                        dht_stub.bind(self.world), ntptime_stub.bind(self.world))
        self.app = None
        self.tasks = []
        self.boot_started = None
        self.registered_ms = None
        self.sessions = 0
        self.resets = 0

    def boot(self):
        from app import App

        machine_ns, network_ns, dht_ns, ntptime_ns = self.modules
        self.boot_started = time.monotonic()
        self.registered_ms = None
        self.app = App(flash=self.flash, machine=machine_ns, network=network_ns, dht=dht_ns,
                       ntptime=ntptime_ns, console=self.fleet.quiet)
        point = self.app.point
        point.link.call_observer = self.observe_call
        self.tasks = [asyncio.ensure_future(self.app.main()), asyncio.ensure_future(self.drive())]

    def observe_call(self, action, ms, outcome):
        self.fleet.stats.call_done(action, ms, outcome)
        # connection setup: boot -> WebSocket up -> BootNotification answered (the central
        # system under test accepts every simulated station)
        if action == "BootNotification" and outcome == "ok" and self.registered_ms is None:
            self.registered_ms = 1000 * (time.monotonic() - self.boot_started)
            self.fleet.connect_ms.append(self.registered_ms)

    def on_reset(self, reason):
        """machine.reset() / the watchdog: the board restarts with a fresh App."""
        self.resets += 1
        self.fleet.loop.call_soon_threadsafe(self._restart)

    def _restart(self):
        for task in self.tasks:
            task.cancel()
        if self.app is not None:
            self.app.station.stop()
        self.boot()

    async def drive(self):
        """The EV: arrivals, authorisation, charging curve, suspensions, faults, departures."""
        opts = self.fleet.opts
        w = self.world
        rng = self.rng
        await asyncio.sleep(rng.uniform(0, opts.arrival_spread))
        while True:
            while self.app.point.summary().get("registration") != "Accepted":
                await asyncio.sleep(1)
            w.set("ev_demand_a", rng.choice((10.0, 16.0, 16.0, 24.0, 32.0)))
            w.set("ev_suspended", False)
            w.set("ev_plugged", True)
            await asyncio.sleep(rng.uniform(1, 4))
            self.app.point.local_start(rng.choice(ID_TAGS))
            self.sessions += 1
            self.fleet.sessions += 1
            session_s = rng.uniform(opts.session_min, opts.session_max)
            demand = w.ev_demand_a
            t = 0.0
            while t < session_s:
                step = min(10.0, session_s - t)
                await asyncio.sleep(step)
                t += step
                # charging curve: the EV tapers its demand over the last third of the session
                if t > session_s * 2 / 3:
                    w.set("ev_demand_a", max(6.0, demand * (session_s - t) / (session_s / 3)))
                roll = rng.random()
                if roll < 0.05:
                    w.set("ev_suspended", True)
                    await asyncio.sleep(rng.uniform(5, 15))
                    w.set("ev_suspended", False)
                elif roll < 0.06:
                    hot = w.ambient_c
                    w.set("ambient_c", 75.0)  # over-temperature: Faulted, HighTemperature
                    await asyncio.sleep(rng.uniform(10, 20))
                    w.set("ambient_c", hot)
            if rng.random() < 0.5:
                self.app.point.local_stop()  # stopped at the card reader
                await asyncio.sleep(rng.uniform(2, 6))
            w.set("ev_plugged", False)  # EVDisconnected when still charging
            self.fleet.sessions_ended += 1
            await asyncio.sleep(rng.expovariate(1.0 / opts.idle_mean))


class Fleet:
    def __init__(self, opts, first_index):
        self.opts = opts
        self.first_index = first_index
        self.flash_root = Path(opts.flash_root)
        self.stations = []
        self.stats = Stats(random.Random(opts.seed))
        self.connect_ms = []
        self.sessions = 0
        self.sessions_ended = 0
        self.loop = None

    def quiet(self, *args):
        pass

    def station_config(self, cp_id):
        opts = self.opts
        cfg = {
            "cp_id": cp_id,
            "wifi": {"ssid": "sim", "password": "sim"},
            "ocpp": {"url": opts.server,
                     "keys": {"HeartbeatInterval": opts.heartbeat,
                              "MeterValueSampleInterval": opts.meter_interval}},
            "intervals": {"sensors_s": max(5, opts.telemetry_interval), "telemetry_s": opts.telemetry_interval},
            # The simulator trades sampling fidelity for scale (the firmware reads all of
            # this from config): the safety timer and the meter run less often than on a
            # board (the meter every 10 s, the interval of the fastest reports here), the
            # simulated mains runs at 10 kHz, so measuring one whole cycle (4 sample pairs,
            # exact for a sine) takes 0.1 ms instead of 20 ms of a shared event loop, and
            # the pilot waveform at 10 kHz, so a pilot read window is 0.11 ms, not 1.1 ms.
            # The safety timer meters on its own only when the sampling task's reading is
            # older than meter_stale_ms (a stalled loop): here that is three meter periods.
            "station": {"safety_ms": 10000, "meter_ms": 10000, "meter_stale_ms": 30000,
                        "meter_samples": 4, "mcu_every": 30,
                        "safety_window_us": 1100 * 1000 // SIM_PILOT_HZ},
            "calibration": {"mains_hz": SIM_MAINS_HZ},
            "app": {"watchdog_ms": 0, "report_s": 0, "console": False, "log_bytes": 4096,
                    "collect": False, "loop_probe_ms": 0},
        }
        key = station_key(opts.key_secret, cp_id)
        if key:
            cfg["ocpp"]["password"] = key
        if opts.mqtt:
            cfg["mqtt"] = {"url": mqtt_url(opts.mqtt, cp_id, key)}
        return cfg

    def telemetry_acked(self):
        total = 0
        for s in self.stations:
            t = s.app.telemetry if s.app is not None else None
            if t is not None:
                total += t.published
        return total

    def telemetry_failed(self):
        total = 0
        for s in self.stations:
            t = s.app.telemetry if s.app is not None else None
            if t is not None:
                total += getattr(t, "failures", 0)
        return total

    def transactions(self):
        """(card taps that began a session, sessions that ended) across this worker."""
        return self.sessions, self.sessions_ended

    async def grow(self, target):
        """Add stations up to `target` at this worker's share of the ramp rate."""
        rate = max(1.0, self.opts.ramp_share)
        while len(self.stations) < target:
            station = SimStation(self, self.first_index + len(self.stations))
            station.boot()
            self.stations.append(station)
            await asyncio.sleep(1.0 / rate)

    def registered(self):
        return sum(1 for s in self.stations if s.registered_ms is not None)


async def worker_main(opts):
    # The protocol with the coordinator gets a private copy of stdout; anything else that
    # prints (the firmware's console output, a timer callback's traceback) goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    host_imports()
    fleet = Fleet(opts, opts.first_index)
    fleet.loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await fleet.loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def emit(obj):
        protocol.write(json.dumps(obj) + "\n")
        protocol.flush()

    async def progress():
        last_calls, last_t = 0, time.monotonic()
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            emit({"event": "progress", "stations": len(fleet.stations), "connected": fleet.registered(),
                  "sessions": fleet.sessions, "calls": fleet.stats.total_calls,
                  "calls_per_s": round((fleet.stats.total_calls - last_calls) / (now - last_t), 1),
                  "errors": fleet.stats.errors + fleet.stats.timeouts,
                  "telemetry": fleet.telemetry_acked()})
            last_calls, last_t = fleet.stats.total_calls, now

    async def ramp(target):
        fleet.connect_ms = []
        await fleet.grow(target)
        deadline = time.monotonic() + opts.connect_timeout
        while fleet.registered() < len(fleet.stations) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        emit({"event": "ramped", "stations": len(fleet.stations), "connected": fleet.registered(),
              "connect_ms": fleet.connect_ms})

    asyncio.ensure_future(progress())
    while True:
        line = await reader.readline()
        if not line:  # the coordinator is gone: stop at once, whatever is in progress
            os._exit(0)
        cmd = json.loads(line)
        if cmd["cmd"] == "step":
            opts.ramp_share = cmd.get("rate", opts.ramp_share)
            asyncio.ensure_future(ramp(cmd["target"]))
        elif cmd["cmd"] == "mark":
            fleet.stats.reset()
            fleet.stats.telemetry_base = fleet.telemetry_acked()
            emit({"event": "marked"})
        elif cmd["cmd"] == "report":
            st = fleet.stats
            started, stopped = fleet.transactions()
            emit({"event": "report", "window_s": time.monotonic() - st.started, "calls": st.calls,
                  "errors": st.errors, "timeouts": st.timeouts, "latencies": st.latencies,
                  "telemetry_window": fleet.telemetry_acked() - (st.telemetry_base or 0),
                  "telemetry_acked": fleet.telemetry_acked(), "telemetry_failed": fleet.telemetry_failed(),
                  "tx_started": started, "tx_stopped": stopped, "sessions": fleet.sessions})
        elif cmd["cmd"] == "stop":
            for station in fleet.stations:
                if station.app is not None:
                    station.app.station.stop()
            emit({"event": "stopped"})
            return


# --------------------------------------------------------------------------------------
# The coordinator: workers, schedule, progress, step reports.
# --------------------------------------------------------------------------------------
class Worker:
    def __init__(self, index, count, first_index, opts, ramp_share):
        args = [sys.executable, "-m", "tools.sim", "--worker", "--first-index", str(first_index),
                "--server", opts.server, "--id-prefix", opts.id_prefix, "--seed", str(opts.seed),
                "--meter-interval", str(opts.meter_interval), "--telemetry-interval",
                str(opts.telemetry_interval), "--heartbeat", str(opts.heartbeat), "--ramp-share",
                str(ramp_share), "--flash-root", opts.flash_root, "--session-min", str(opts.session_min),
                "--session-max", str(opts.session_max), "--idle-mean", str(opts.idle_mean),
                "--arrival-spread", str(opts.arrival_spread), "--key-secret", opts.key_secret]
        if opts.mqtt:
            args += ["--mqtt", opts.mqtt]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.index = index
        self.progress = {}
        self.replies = asyncio.Queue()

    async def pump(self, loop):
        while True:
            line = await loop.run_in_executor(None, self.proc.stdout.readline)
            if not line:
                await self.replies.put(None)
                return
            try:
                msg = json.loads(line)
            except ValueError:
                sys.stderr.write(f"[sim] worker {self.index}: {line}")
                continue
            if msg["event"] == "progress":
                self.progress = msg
            else:
                await self.replies.put(msg)

    def send(self, obj):
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    async def ask(self, obj, expect):
        self.send(obj)
        msg = await self.replies.get()
        if msg is None or msg["event"] != expect:
            raise RuntimeError(f"worker {self.index} answered {msg!r} instead of {expect}")
        return msg


def split(total, parts):
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def station_key(secret: str, cp_id: str) -> str:
    """The station's AuthorizationKey (32 hex characters), or "" without a secret."""
    if not secret:
        return ""
    return hmac.new(secret.encode(), cp_id.encode(), hashlib.sha256).hexdigest()[:32]


def mqtt_url(url: str, cp_id: str, key: str) -> str:
    """The broker URL with the station's credentials (username = chargePointId)."""
    if not key or "@" in url:
        return url
    scheme, _, rest = url.partition("://")
    return "%s://%s:%s@%s" % (scheme, cp_id, key, rest)


def register_stations(opts, count: int) -> None:
    """Register stations 0..count-1 with their keys through the server's REST API."""
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if opts.api_token:
        headers["Authorization"] = "Bearer " + opts.api_token
    for i in range(count):
        cp_id = "%s%05d" % (opts.id_prefix, i)
        body = json.dumps({"id": cp_id, "auth_key": station_key(opts.key_secret, cp_id)})
        request = urllib.request.Request(opts.api.rstrip("/") + "/chargepoints", data=body.encode(),
                                         headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass


async def coordinator(opts):
    schedule = [int(s) for s in opts.schedule.split(",")] if opts.schedule else [opts.stations]
    peak = max(schedule)
    if opts.api and opts.key_secret:
        await asyncio.to_thread(register_stations, opts, peak)
    # workers are started as the fleet grows (a small first step must not share the
    # machine with the processes of the largest one); worker i holds stations
    # i * capacity ... (i + 1) * capacity - 1
    capacity = math.ceil(peak / opts.workers) if opts.workers else STATIONS_PER_WORKER
    loop = asyncio.get_running_loop()
    workers = []

    def ensure_workers(count):
        while len(workers) < count:
            i = len(workers)
            w = Worker(i, capacity, i * capacity, opts, opts.ramp / count)
            asyncio.ensure_future(w.pump(loop))
            workers.append(w)

    stop = asyncio.Event()

    def on_signal():
        stop.set()
        for w in workers:  # workers exit as soon as their stdin closes
            try:
                w.proc.stdin.close()
            except OSError:
                pass
        loop.call_later(5, loop.stop)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    def emit(obj):
        if opts.json:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    async def progress_line():
        while not stop.is_set():
            await asyncio.sleep(1)
            p = [w.progress for w in workers if w.progress]
            if p:
                sys.stderr.write("\r[sim] stations %d connected %d sessions %d msg/s %.0f errors %d telemetry %d   "
                                 % (sum(x["stations"] for x in p), sum(x["connected"] for x in p),
                                    sum(x["sessions"] for x in p), sum(x["calls_per_s"] for x in p),
                                    sum(x["errors"] for x in p), sum(x["telemetry"] for x in p)))
                sys.stderr.flush()

    asyncio.ensure_future(progress_line())
    try:
        for step, target in enumerate(schedule):
            ensure_workers(max(1, math.ceil(target / capacity)))
            shares = split(target, len(workers))
            t0 = time.monotonic()
            rate = opts.ramp / len(workers)
            ramped = await asyncio.gather(*(w.ask({"cmd": "step", "target": shares[i], "rate": rate}, "ramped")
                                            for i, w in enumerate(workers)))
            connect = [ms for r in ramped for ms in r["connect_ms"]]
            emit({"event": "step_start", "step": step, "stations": target,
                  "connected": sum(r["connected"] for r in ramped), "ramp_s": round(time.monotonic() - t0, 1),
                  "connect_ms": {"p50": percentile(connect, 50), "p99": percentile(connect, 99),
                                 "samples": len(connect)}})
            await asyncio.gather(*(w.ask({"cmd": "mark"}, "marked") for w in workers))
            hold = opts.hold if opts.schedule else (opts.duration or 1e9)
            try:
                await asyncio.wait_for(stop.wait(), hold)
            except TimeoutError:
                pass
            reports = await asyncio.gather(*(w.ask({"cmd": "report"}, "report") for w in workers))
            window = max(r["window_s"] for r in reports)
            latencies = [ms for r in reports for ms in r["latencies"]]
            calls = sum(r["calls"] for r in reports)
            telemetry_window = sum(r["telemetry_window"] for r in reports)
            emit({"event": "step_end", "step": step, "stations": target, "window_s": round(window, 1),
                  "ocpp": {"calls": calls, "p50_ms": percentile(latencies, 50),
                           "p99_ms": percentile(latencies, 99), "errors": sum(r["errors"] for r in reports),
                           "timeouts": sum(r["timeouts"] for r in reports)},
                  "telemetry": {"acked": sum(r["telemetry_acked"] for r in reports),
                                "window": telemetry_window,
                                "failed": sum(r["telemetry_failed"] for r in reports)},
                  "transactions": {"started": sum(r["tx_started"] for r in reports),
                                   "stopped": sum(r["tx_stopped"] for r in reports),
                                   "sessions": sum(r["sessions"] for r in reports)},
                  "messages_per_s": round((calls + telemetry_window) / max(window, 1e-6), 1)})
            if stop.is_set():
                break
    finally:
        for w in workers:
            try:
                w.send({"cmd": "stop"})
            except (BrokenPipeError, OSError, ValueError):
                pass
        for w in workers:
            try:
                w.proc.wait(30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        sys.stderr.write("\n")


# --------------------------------------------------------------------------------------
# --runtime micropython: k separate Unix-port boards
# --------------------------------------------------------------------------------------
def run_micropython_boards(opts):
    from tools.board import Board, install_firmware

    root = Path(opts.flash_root)
    boards = []
    rng = random.Random(opts.seed)
    try:
        for i in range(opts.stations):
            cp_id = "%s%05d" % (opts.id_prefix, i)
            flash = root / cp_id
            flash.mkdir(parents=True, exist_ok=True)
            cfg = {"cp_id": cp_id, "wifi": {"ssid": "sim", "password": "sim"},
                   "ocpp": {"url": opts.server,
                            "keys": {"HeartbeatInterval": opts.heartbeat,
                                     "MeterValueSampleInterval": opts.meter_interval}},
                   "intervals": {"telemetry_s": opts.telemetry_interval}}
            key = station_key(opts.key_secret, cp_id)
            if key:
                cfg["ocpp"]["password"] = key
            if opts.mqtt:
                cfg["mqtt"] = {"url": mqtt_url(opts.mqtt, cp_id, key)}
            (flash / "config.json").write_text(json.dumps(cfg))
            install_firmware(flash)
            console = open(root / f"{cp_id}.console.log", "w")
            board = Board("micropython", flash, seed=opts.seed + i, world={"dht_blocking_ms": 0},
                          console=console)
            board.power_on()
            boards.append(board)
        deadline = time.monotonic() + (opts.duration or 60)
        sessions = 0
        while time.monotonic() < deadline:
            board = rng.choice(boards)
            board.handle({"cmd": "plug", "demand_a": rng.choice((10, 16, 32))})
            board.handle({"cmd": "console", "line": "ev.start(%r)" % rng.choice(ID_TAGS)})
            sessions += 1
            time.sleep(min(5.0, max(0.5, deadline - time.monotonic())))
            board.handle({"cmd": "unplug"})
            sys.stderr.write("\r[sim] micropython boards %d sessions %d   " % (len(boards), sessions))
        sys.stderr.write("\n")
    finally:
        for board in boards:
            board.close()


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stations", type=int, default=10)
    p.add_argument("--schedule", default="", help="comma-separated station counts, one step each")
    p.add_argument("--hold", type=float, default=60.0, help="seconds per schedule step")
    p.add_argument("--server", default="ws://127.0.0.1:9000/ocpp", help="OCPP base URL")
    p.add_argument("--mqtt", default="", help="broker URL (empty: no telemetry)")
    p.add_argument("--id-prefix", default="SIM-")
    p.add_argument("--api", default="", help="server REST base URL: register the stations with their keys")
    p.add_argument("--api-token", default="", help="Bearer token for --api")
    p.add_argument("--meter-interval", type=int, default=60, help="MeterValueSampleInterval, s")
    p.add_argument("--telemetry-interval", type=int, default=60, help="MQTT telemetry period, s")
    p.add_argument("--heartbeat", type=int, default=300, help="HeartbeatInterval, s")
    p.add_argument("--ramp", type=float, default=200.0, help="connections per second")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until stopped)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runtime", choices=["cpython", "micropython"], default="cpython")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: auto)")
    p.add_argument("--json", action="store_true", help="step events as JSON lines on stdout")
    p.add_argument("--flash-root", default="", help="where the stations' flash directories go")
    p.add_argument("--session-min", type=float, default=60.0)
    p.add_argument("--session-max", type=float, default=600.0)
    p.add_argument("--idle-mean", type=float, default=120.0)
    p.add_argument("--arrival-spread", type=float, default=60.0)
    p.add_argument("--connect-timeout", type=float, default=120.0)
    p.add_argument("--key-secret", default="picocharge-sim",
                   help="derive each station's AuthorizationKey from this (OCPP and MQTT "
                        "credentials; 32 hex characters each)")
    # internal: worker processes
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--first-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--ramp-share", type=float, default=200.0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    opts = parse(argv)
    if opts.worker:
        asyncio.run(worker_main(opts))
        return 0
    own_root = not opts.flash_root
    if own_root:
        opts.flash_root = tempfile.mkdtemp(prefix="picocharge-sim-")
    try:
        if opts.runtime == "micropython":
            if opts.api and opts.key_secret:
                register_stations(opts, opts.stations)
            run_micropython_boards(opts)
        else:
            asyncio.run(coordinator(opts))
    finally:
        if own_root:
            shutil.rmtree(opts.flash_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
