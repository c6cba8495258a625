"""The scalability benchmark: the SIMA paper's evaluation, then far past it.

    python -m tools.bench                 # short run (default, well under 15 minutes)
    python -m tools.bench --paper         # the paper's timing: each step held 10 minutes

Starts the server under test on 127.0.0.1 (with its embedded broker, then with a
Mosquitto it starts itself), runs the fleet simulator (`tools.sim`, the real firmware
ChargePoint on the hardware stand-ins) through

* the paper's schedule: 10 -> 20 -> 40 -> 80 -> 160 stations, telemetry every 60 s
  (225-byte payloads, the paper's figure) plus OCPP traffic;
* a scale sweep: 500 -> 1 000 -> 2 000 -> 5 000 -> 10 000 -> 20 000 stations with
  MeterValues and telemetry every 10 s, stopping at the first step that fails;
* (embedded broker) large fleets at the paper's rate (MeterValues and telemetry every
  60 s): 5 000 then 10 000 stations by default (`--paper-rate-fleet`), each held 40 s,
  stopping at the first that fails: how many stations one machine serves at a realistic
  message rate;

and the same load against a bare `ocpp`-package central system (`reference_cs`) for a
reference line. For every step it records the server's CPU (% of one core) and RSS, OCPP
CALL -> CALLRESULT latency p50/p99 (measured by the charge points), MQTT publish -> stored
latency p50/p99 (probe messages polled through the REST API), connection setup time,
messages/s and loss (sent versus stored). Writes bench/results/<date>.json, a markdown
table and PNG charts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psutil

from tools.bench import commit_cost, report
from tools.bench.profile import Profiler

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
PAPER_STEPS = [10, 20, 40, 80, 160]
SWEEP_STEPS = [500, 1000, 2000, 5000, 10000, 20000]
OCPP_P99_LIMIT_MS = 100.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(q / 100 * (len(values) - 1)))))
    return round(values[k], 2)


class Process:
    """A child process started by the benchmark, stopped by PID at the end."""

    def __init__(self, name: str, cmd: list[str], logfile: Path, env=None):
        self.name = name
        self.logfile = open(logfile, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.logfile, stderr=subprocess.STDOUT,
                                     env=env or os.environ.copy())
        self.ps = psutil.Process(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfile.close()


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"[bench] {url} did not come up in {timeout}s")


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"[bench] nothing listens on 127.0.0.1:{port} after {timeout}s")


# The admin API token the benchmarked server is started with (PICOCHARGE_ADMIN_TOKEN).
API_TOKEN = secrets.token_urlsafe(32)
API_HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}


def get_json(url: str, attempts: int = 6) -> dict:
    """GET a JSON document; a server too busy to answer in time is asked again (and the
    step that needed it is reported as failed by the caller if it never answers)."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=API_HEADERS),
                                        timeout=10) as resp:
                return json.load(resp)
        except (TimeoutError, urllib.error.URLError, ConnectionError):
            if attempt == attempts - 1:
                raise
            time.sleep(2)


class ResourceSampler:
    """CPU (% of one core) and RSS of a set of processes, sampled once a second."""

    def __init__(self, processes: list[psutil.Process]):
        self.processes = processes
        self.cpu: list[float] = []
        self.rss: list[int] = []
        self.stop_event = threading.Event()
        self.cpu_start = self._cpu_seconds()
        self.t_start = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _members(self) -> list[psutil.Process]:
        """The measured processes and their children (the server's embedded broker)."""
        out = []
        for p in self.processes:
            out.append(p)
            try:
                out.extend(p.children(recursive=True))
            except psutil.Error:
                pass
        return out

    def _cpu_seconds(self) -> float:
        total = 0.0
        for p in self._members():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        last_cpu, last_t = self.cpu_start, self.t_start
        while not self.stop_event.wait(1.0):
            now_cpu, now_t = self._cpu_seconds(), time.monotonic()
            self.cpu.append(100.0 * (now_cpu - last_cpu) / max(1e-6, now_t - last_t))
            last_cpu, last_t = now_cpu, now_t
            rss = 0
            for p in self._members():
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            self.rss.append(rss)

    def finish(self) -> dict:
        self.stop_event.set()
        self.thread.join()
        elapsed = time.monotonic() - self.t_start
        return {
            "cpu_percent_mean": round(100.0 * (self._cpu_seconds() - self.cpu_start) / max(1e-6, elapsed), 2),
            "cpu_percent_p99": percentile(self.cpu, 99),
            "rss_mb_max": round(max(self.rss) / 2**20, 1) if self.rss else None,
            "rss_mb_mean": round(statistics.mean(self.rss) / 2**20, 1) if self.rss else None,
        }


# the fleet's AuthorizationKeys are derived from this (tools/sim.py station_key)
BENCH_KEY_SECRET = "picocharge-bench"


class TelemetryProbe:
    """Publishes probe telemetry (QoS 1) and polls the REST API until each is stored."""

    def __init__(self, mqtt_port: int, api: str, probe_id: str = "BENCH-PROBE", embedded: bool = False):
        import paho.mqtt.client as mqtt

        from tools.sim import station_key

        self.api = api
        self.probe_id = probe_id
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=probe_id if embedded else f"bench-probe-{os.getpid()}")
        if embedded:  # a registered station with its key, as the embedded broker requires
            key = station_key(BENCH_KEY_SECRET, probe_id)
            req = urllib.request.Request(f"{api}/api/v1/chargepoints",
                                         data=json.dumps({"id": probe_id, "auth_key": key}).encode(),
                                         headers={"Content-Type": "application/json",
                                                  **API_HEADERS}, method="POST")
            urllib.request.urlopen(req, timeout=10).close()
            self.client.username_pw_set(probe_id, key)
            self.client.reconnect_delay_set(0.1, 2)
        self.client.connect("127.0.0.1", mqtt_port)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.seq = 0
        self.stored = 0
        self.latencies: list[float] = []
        self.missing = 0
        self.closed = threading.Event()

    def measure(self, count: int, spacing_s: float) -> None:
        for _ in range(count):
            if self.closed.is_set():
                return
            self.seq += 1
            payload = json.dumps({"ts": int(time.time()), "seq": self.seq, "t": 21.0, "st": "Available"})
            t0 = time.monotonic()
            info = self.client.publish(f"picocharge/{self.probe_id}/telemetry", payload, qos=1)
            try:
                info.wait_for_publish(10)
            except (RuntimeError, ValueError):
                if self.closed.is_set():
                    return  # the run ended while this probe was in flight
                raise
            if self._wait_stored(self.seq, timeout=15):
                self.latencies.append(1000 * (time.monotonic() - t0))
            else:
                self.missing += 1
            self.closed.wait(spacing_s)

    def _wait_stored(self, seq: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        url = f"{self.api}/api/v1/chargepoints/{self.probe_id}/telemetry?limit=5"
        while time.monotonic() < deadline:
            try:
                if any(row.get("seq") == seq for row in get_json(url)):
                    self.stored += 1
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def take(self) -> dict:
        out = {"p50_ms": percentile(self.latencies, 50), "p99_ms": percentile(self.latencies, 99),
               "samples": len(self.latencies), "missing": self.missing}
        self.latencies = []
        self.missing = 0
        return out

    def close(self) -> None:
        self.closed.set()
        self.client.loop_stop()
        self.client.disconnect()


def run_load(label: str, target: dict, steps: list[int], hold: float, meter_interval: int,
             telemetry_interval: int, ramp: int, workdir: Path, stop_on_failure: bool,
             seed: int, profile: bool = False) -> list[dict]:
    """Run one schedule against one target and return a record per step; with `profile`,
    each step also gets a sampling profile of the server (tools/bench/profile.py)."""
    cmd = [sys.executable, "-m", "tools.sim", "--schedule", ",".join(map(str, steps)),
           "--hold", str(hold), "--server", target["ocpp_url"],
           "--meter-interval", str(meter_interval), "--telemetry-interval", str(telemetry_interval),
           "--heartbeat", "300", "--ramp", str(ramp), "--id-prefix", f"{label.upper()}-",
           "--seed", str(seed), "--json", "--flash-root", str(workdir / f"sim-{label}")]
    if target.get("mqtt_url"):
        cmd += ["--mqtt", target["mqtt_url"]]
    if target.get("embedded_broker"):
        # the embedded broker admits registered stations only, by their keys
        cmd += ["--key-secret", BENCH_KEY_SECRET, "--api", f"{target['api']}/api/v1", "--api-token", API_TOKEN]
    log(f"{label}: {' '.join(cmd[3:])}")
    sim = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=open(workdir / f"sim-{label}.log", "w"),
                           text=True, start_new_session=True)
    sim_ps = psutil.Process(sim.pid)
    measured = [psutil.Process(pid) for pid in target["pids"]]
    probe = (TelemetryProbe(target["mqtt_port"], target["api"], embedded=target.get("embedded_broker"))
             if target.get("api") else None)
    base = stored_telemetry(target["api"]) if target.get("api") else 0
    records = []
    sampler = None
    sim_sampler = None
    profiler = None
    try:
        for line in sim.stdout:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event["event"] == "step_start":
                sampler = ResourceSampler(measured)
                sim_sampler = ResourceSampler([sim_ps])
                if profile:
                    profiler = Profiler(target["pids"][0], min(15.0, hold * 0.75),
                                        workdir / f"profile-{label}-{event['stations']}.folded")
                if probe:
                    threading.Thread(target=probe.measure, args=(max(5, int(hold // 4)), 1.0),
                                     daemon=True).start()
                log(f"{label}: {event['stations']} stations connected "
                    f"(setup p50 {event['connect_ms']['p50']} ms, p99 {event['connect_ms']['p99']} ms)")
                start_event = event
            elif event["event"] == "step_end":
                resources = sampler.finish()
                sim_resources = sim_sampler.finish()
                record = {
                    "target": label, "stations": event["stations"],
                    "connected": start_event["connected"], "connect_ms": start_event["connect_ms"],
                    "ocpp": event["ocpp"], "telemetry": event["telemetry"],
                    "transactions": event["transactions"], "messages_per_s": event["messages_per_s"],
                    "ocpp_per_s": round(event["ocpp"]["calls"] / max(event["window_s"], 1e-6), 1),
                    "server": resources, "simulator": sim_resources,
                }
                if profiler is not None:
                    record["profile"] = profiler.finish()
                    profiler = None
                failures = []
                if target.get("api"):
                    try:
                        stored = settle_stored(target["api"], event["telemetry"]["acked"], base, probe)
                        record["telemetry"]["stored"] = stored
                        record["telemetry"]["lost"] = max(0, event["telemetry"]["acked"] - stored)
                    except OSError as exc:
                        failures.append(f"the server's API did not answer ({exc})")
                    record["mqtt_latency"] = probe.take() if probe else None
                failures += step_failures(record)
                record["ok"] = not failures
                record["failures"] = failures
                records.append(record)
                log(f"{label}: {event['stations']} stations: server CPU {resources['cpu_percent_mean']} %, "
                    f"RSS {resources['rss_mb_max']} MB, OCPP p99 {event['ocpp']['p99_ms']} ms"
                    + (f", FAILED: {'; '.join(failures)}" if failures else ""))
                if failures and stop_on_failure:
                    break
    finally:
        if profiler is not None:
            profiler.finish()
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(60)
        except subprocess.TimeoutExpired:
            pass
        # the simulator and its workers are one process group: none may outlive its run
        try:
            os.killpg(sim.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        sim.wait()
        if probe:
            probe.close()
    return records


def stored_telemetry(api: str) -> int:
    return get_json(f"{api}/api/v1/stats")["telemetry_stored"]


def settle_stored(api: str, acked: int, base: int, probe, timeout: float = 20) -> int:
    """Telemetry the server stored for the simulated stations since `base`, once it has
    caught up with what the broker acknowledged (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        stored = stored_telemetry(api) - base - (probe.stored if probe else 0)
        if stored >= acked or time.monotonic() >= deadline:
            return stored
        time.sleep(0.5)


def step_failures(record: dict) -> list[str]:
    failures = []
    if record["connected"] < record["stations"]:
        failures.append(f"{record['stations'] - record['connected']} stations could not connect")
    p99 = record["ocpp"].get("p99_ms")
    if p99 is not None and p99 > OCPP_P99_LIMIT_MS:
        failures.append(f"OCPP p99 {p99} ms > {OCPP_P99_LIMIT_MS} ms")
    if record["ocpp"].get("errors") or record["ocpp"].get("timeouts"):
        failures.append(f"{record['ocpp'].get('errors', 0)} OCPP errors, "
                        f"{record['ocpp'].get('timeouts', 0)} timeouts")
    lost = record["telemetry"].get("lost")
    if lost:
        failures.append(f"{lost} telemetry messages lost")
    return failures


def start_server(workdir: Path, label: str, mqtt_url: str | None = None) -> tuple[Process, dict]:
    ocpp_port, http_port, mqtt_port = free_port(), free_port(), free_port()
    data = workdir / f"server-{label}"
    cmd = [sys.executable, "-m", "server", "--data-dir", str(data), "--ocpp-host", "127.0.0.1",
           "--ocpp-port", str(ocpp_port), "--http-host", "127.0.0.1", "--http-port", str(http_port),
           "--auto-register", "--log-level", "WARNING",
           # every simulated station connects from 127.0.0.1: no per-address handshake
           # limits (a real fleet comes from many addresses)
           "--set", "ocpp.handshake_rate_per_address=0",
           "--set", "ocpp.max_connections_per_address=0",
           "--set", "http.station_rate_per_address=0"]
    if mqtt_url:
        cmd += ["--mqtt-url", mqtt_url]
        mqtt_port = int(mqtt_url.rsplit(":", 1)[1])
    else:
        cmd += ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(mqtt_port)]
    env = dict(os.environ, PICOCHARGE_ADMIN_TOKEN=API_TOKEN)
    proc = Process(f"server-{label}", cmd, workdir / f"server-{label}.log", env=env)
    api = f"http://127.0.0.1:{http_port}"
    wait_http(f"{api}/api/v1/health")
    wait_port(ocpp_port)
    # the simulated drivers' cards, so sessions are authorised here as at the reference
    from tools.sim import ID_TAGS

    for tag in ID_TAGS:
        req = urllib.request.Request(f"{api}/api/v1/idtags", data=json.dumps({"id_tag": tag}).encode(),
                                     headers={"Content-Type": "application/json", **API_HEADERS},
                                     method="POST")
        urllib.request.urlopen(req, timeout=10).close()
    return proc, {"ocpp_url": f"ws://127.0.0.1:{ocpp_port}/ocpp", "api": api,
                  "mqtt_url": f"mqtt://127.0.0.1:{mqtt_port}", "mqtt_port": mqtt_port,
                  "embedded_broker": not mqtt_url, "pids": [proc.proc.pid]}


def start_mosquitto(workdir: Path) -> tuple[Process, int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        raise SystemExit("[bench] mosquitto is not installed (make setup installs it)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\nmax_inflight_messages 0\n")
    proc = Process("mosquitto", [exe, "-c", str(conf)], workdir / "mosquitto.log")
    wait_port(port)
    return proc, port


def firmware_heap_figures() -> dict:
    """Peak heap on the MicroPython Unix port (32-bit) at a Pico W's heap: the charge point alone during a
    session (tools.firmware_heap) and the complete board (tools.bench.board_heap)."""
    from tools import firmware_heap
    from tools.bench import board_heap, ed25519_verify

    log("firmware heap: charge point session, then the complete board; Ed25519 verify")
    out = {}
    for name, fn in (("charge_point", firmware_heap.run), ("board", board_heap.run),
                     ("ed25519", ed25519_verify.run)):
        try:
            out[name] = fn()
        except Exception as exc:  # reported, not hidden: the table says it failed
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def machine_info() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "os": platform.platform()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true", help="hold each paper step 10 minutes")
    parser.add_argument("--hold", type=float, default=None, help="seconds per step (default 10, --paper 600)")
    parser.add_argument("--sweep-hold", type=float, default=15.0, help="seconds per sweep step")
    parser.add_argument("--sweep", default=",".join(map(str, SWEEP_STEPS)),
                        help="scale sweep steps (empty to skip)")
    parser.add_argument("--ramp", type=int, default=400, help="connections per second")
    parser.add_argument("--paper-rate-fleet", default="5000,10000",
                        help="large fleets at the paper's 60 s rate, one step each (empty to skip)")
    parser.add_argument("--paper-rate-hold", type=float, default=40.0,
                        help="seconds each large fleet is held")
    parser.add_argument("--no-mosquitto", action="store_true", help="skip the Mosquitto run")
    parser.add_argument("--no-reference", action="store_true", help="skip the ocpp-package reference")
    parser.add_argument("--no-firmware", action="store_true", help="skip the firmware heap figures")
    parser.add_argument("--no-commit-cost", action="store_true",
                        help="skip the cost of answering after commit (tools.bench.commit_cost)")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the server profile of each sweep step (py-spy)")
    parser.add_argument("--fleet-restart", type=int, default=10000,
                        help="stations of the restart admission run (tools.bench.fleet_restart); 0 skips it")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    hold = args.hold if args.hold is not None else (600.0 if args.paper else 10.0)
    sweep = [int(s) for s in args.sweep.split(",") if s.strip()]
    fleet60 = [int(s) for s in args.paper_rate_fleet.split(",") if s.strip()]

    workdir = Path(tempfile.mkdtemp(prefix="picocharge-bench-"))
    started = datetime.now(UTC)
    results = {"started": started.isoformat(timespec="seconds"), "machine": machine_info(),
               "settings": {"paper_hold_s": hold, "sweep_hold_s": args.sweep_hold, "ramp": args.ramp,
                            "paper_rate_fleet": fleet60,
                            "paper_rate_hold_s": args.paper_rate_hold,
                            "paper_telemetry_s": 60, "sweep_interval_s": 10},
               "runs": []}
    processes: list[Process] = []
    if not args.no_firmware:
        results["firmware"] = firmware_heap_figures()
    if not args.no_commit_cost:
        log("commit cost: transaction messages against store.synchronous FULL and NORMAL")
        results["commit_cost"] = commit_cost.run()
    if args.fleet_restart:
        log(f"fleet restart: {args.fleet_restart} registered stations reconnecting at once")
        done = subprocess.run([sys.executable, "-m", "tools.bench.fleet_restart", "--stations",
                               str(args.fleet_restart)], capture_output=True, text=True,
                              cwd=ROOT, timeout=3600)
        lines = done.stdout.strip().splitlines()
        results["fleet_restart"] = json.loads(lines[-1]) if done.returncode == 0 and lines else {
            "error": (done.stderr or done.stdout).strip()[-1000:]}
        log(f"fleet restart: {results['fleet_restart']}")
    try:
        configs = [("embedded", None)]
        if not args.no_mosquitto:
            configs.append(("mosquitto", "mosquitto"))
        for label, broker in configs:
            mqtt_url = None
            if broker == "mosquitto":
                mosq, port = start_mosquitto(workdir)
                processes.append(mosq)
                mqtt_url = f"mqtt://127.0.0.1:{port}"
            server, target = start_server(workdir, label, mqtt_url)
            processes.append(server)
            log(f"server ({label} broker) up: {target['api']}")
            paper = run_load(f"paper-{label}", target, PAPER_STEPS, hold, 60, 60, args.ramp, workdir,
                             stop_on_failure=False, seed=args.seed)
            results["runs"].append({"name": f"paper-{label}", "broker": label, "steps": paper})
            if sweep:
                swept = run_load(f"sweep-{label}", target, sweep, args.sweep_hold, 10, 10, args.ramp,
                                 workdir, stop_on_failure=True, seed=args.seed,
                                 profile=not args.no_profile)
                results["runs"].append({"name": f"sweep-{label}", "broker": label, "steps": swept})
            if broker is None and fleet60:
                large = run_load(f"fleet60-{label}", target, fleet60,
                                 args.paper_rate_hold, 60, 60, args.ramp, workdir,
                                 stop_on_failure=True, seed=args.seed, profile=not args.no_profile)
                results["runs"].append({"name": f"fleet60-{label}", "broker": label, "steps": large})
            server.stop()
            if broker == "mosquitto":
                mosq.stop()
        if not args.no_reference:
            ref_port = free_port()
            ref = Process("reference", [sys.executable, "-m", "tools.bench.reference_cs", "--port",
                                        str(ref_port)], workdir / "reference.log")
            processes.append(ref)
            wait_port(ref_port)
            target = {"ocpp_url": f"ws://127.0.0.1:{ref_port}/ocpp", "pids": [ref.proc.pid]}
            paper = run_load("paper-reference", target, PAPER_STEPS, hold, 60, 60, args.ramp, workdir,
                             stop_on_failure=False, seed=args.seed)
            results["runs"].append({"name": "paper-reference", "broker": None, "steps": paper})
            if sweep:
                swept = run_load("sweep-reference", target, sweep, args.sweep_hold, 10, 10, args.ramp,
                                 workdir, stop_on_failure=True, seed=args.seed)
                results["runs"].append({"name": "sweep-reference", "broker": None, "steps": swept})
            ref.stop()
    finally:
        for proc in processes:
            proc.stop()
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["duration_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    paths = report.write(results, args.out, started)
    log(f"done in {results['duration_s']} s: " + ", ".join(str(p) for p in paths))
    log(f"logs and data of this run: {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
