"""Acknowledged means stored, with the embedded broker too: stations publish QoS 1
telemetry while the server (a separate process, `python -m server`) is SIGKILLed at random
moments and restarted on the same data directory; afterwards every message the broker
acknowledged (PUBACK) to a station is in the store."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
from conftest import free_port, station_key, wait_until

ROOT = Path(__file__).resolve().parents[2]
STATIONS = 8
KILLS = 6
ADMIN_TOKEN = "crash-test-admin-token-0123456789"


class ServerProcess:
    """`python -m server` on a data directory, its console collected."""

    def __init__(self, data_dir: Path, mqtt_port: int) -> None:
        self.data_dir = data_dir
        self.mqtt_port = mqtt_port
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}

    def start(self) -> ServerProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PICOCHARGE_ADMIN_TOKEN=ADMIN_TOKEN)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--data-dir", str(self.data_dir),
             "--ocpp-host", "127.0.0.1", "--ocpp-port", "0", "--http-host", "127.0.0.1",
             "--http-port", "0", "--mqtt-port", str(self.mqtt_port), "--log-level", "WARNING"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()

        def read(proc=self.proc) -> None:
            for line in proc.stdout:
                self.lines.append(line.rstrip())
                if line.startswith("PORTS "):
                    self.ports = {k: int(v) for k, v in
                                  (item.split("=") for item in line.split()[1:])}
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60):
            raise AssertionError("server did not start:\n" + "\n".join(self.lines[-30:]))
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    def api(self, method: str, path: str, body=None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['http']}/api/v1{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)


class Station(threading.Thread):
    """A station publishing numbered QoS 1 telemetry; remembers which were PUBACKed.
    (paho queues what is published while disconnected and sends it on reconnecting.)"""

    def __init__(self, cp_id: str, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.cp_id = cp_id
        self.stop_event = stop
        self.sent: list[tuple[int, int]] = []  # (seq, mid); fewer than 65 535, so no mid wraps
        self.acked_mids: set[int] = set()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cp_id)
        self.client.username_pw_set(cp_id, station_key(cp_id))
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_publish = lambda client, userdata, mid, rc, props: self.acked_mids.add(mid)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def run(self) -> None:
        seq = 0
        while not self.stop_event.is_set():
            seq += 1
            payload = json.dumps({"ts": int(time.time()), "seq": seq, "t": 20.0, "w": seq})
            info = self.client.publish(f"picocharge/{self.cp_id}/telemetry", payload, qos=1)
            self.sent.append((seq, info.mid))
            time.sleep(0.04)

    def acknowledged(self) -> set[int]:
        return {seq for seq, mid in self.sent if mid in self.acked_mids}

    def unacknowledged(self) -> int:
        return sum(1 for _, mid in self.sent if mid not in self.acked_mids)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _broker_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "mqtt" / "mosquitto.pid").read_text())
    except (OSError, ValueError):
        return None


def _stored(data_dir: Path) -> dict[str, set[int]]:
    stored: dict[str, set[int]] = {}
    with sqlite3.connect(data_dir / "picocharge.db", timeout=30) as db:
        for cp_id, seq in db.execute("SELECT cp_id, seq FROM telemetry"):
            stored.setdefault(cp_id, set()).add(seq)
    return stored


def _missing(data_dir: Path, acknowledged: dict[str, set[int]]) -> int:
    stored = _stored(data_dir)
    return sum(len(seqs - stored.get(cp, set())) for cp, seqs in acknowledged.items())


def test_no_telemetry_acknowledged_to_a_station_is_lost_when_the_server_is_killed(tmp_path):
    data_dir = tmp_path / "var"
    server = ServerProcess(data_dir, free_port()).start()
    stations: list[Station] = []
    stop = threading.Event()
    rng = random.Random(1234)
    kills = 0
    try:
        assert any(line.startswith("MQTT broker guarantee: Mosquitto") for line in server.lines)
        for n in range(STATIONS):
            cp_id = f"CRASH-{n:02d}"
            server.api("POST", "/chargepoints", {"id": cp_id, "auth_key": station_key(cp_id)})
        stations = [Station(f"CRASH-{n:02d}", server.mqtt_port, stop) for n in range(STATIONS)]
        for station in stations:
            station.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 3.0))
            server.kill()
            kills += 1
            time.sleep(rng.uniform(0.0, 1.0))  # stations keep publishing meanwhile
            server.start()
        time.sleep(1.0)
        stop.set()
        for station in stations:
            station.join(10)
        # every message still in flight gets its PUBACK (or never will: not counted)
        wait_until(lambda: not any(s.unacknowledged() for s in stations), timeout=30)
        acknowledged = {s.cp_id: s.acknowledged() for s in stations}
        total = sum(len(seqs) for seqs in acknowledged.values())
        try:  # the ingest drains what the broker queued while the server was down
            wait_until(lambda: not _missing(data_dir, acknowledged), timeout=60, interval=0.5)
        except AssertionError:
            pass  # reported below, with the numbers
        server.stop()
        assert _broker_pid(data_dir) is None or not Path(f"/proc/{_broker_pid(data_dir)}").exists()
        stored = _stored(data_dir)
        lost = {cp: sorted(seqs - stored.get(cp, set())) for cp, seqs in acknowledged.items()}
        lost_count = sum(len(seqs) for seqs in lost.values())
        published = sum(len(s.sent) for s in stations)
        print(f"crash test: {kills} SIGKILLs of the server, {published} messages published, "
              f"{total} PUBACKed, {sum(len(v) for v in stored.values())} stored, "
              f"{lost_count} acknowledged but lost")
        assert lost_count == 0, {cp: seqs[:10] for cp, seqs in lost.items() if seqs}
        assert kills == KILLS and total > 0
    finally:
        stop.set()
        for station in stations:
            station.close()
        server.stop()
        pid = _broker_pid(data_dir)
        if pid is not None and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGTERM)  # the broker outlives a killed server by design
