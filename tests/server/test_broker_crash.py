"""Acknowledged means stored, with the embedded broker too: stations publish QoS 1
telemetry while the server (a separate process, `python -m server`) is SIGKILLed at random
moments and restarted on the same data directory; afterwards every message the broker
acknowledged (PUBACK) to a station is in the store."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from serverproc import ServerProcess

from tests.server.conftest import ADMIN_TOKEN, free_port, register, station_key, wait_until

STATIONS = 8
KILLS = 6


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


@pytest.mark.slow(seconds=20)
@pytest.mark.cpu_hungry
def test_no_telemetry_acknowledged_to_a_station_is_lost_when_the_server_is_killed(tmp_path):
    data_dir = tmp_path / "var"
    server = ServerProcess(data_dir, mqtt_port=free_port(),
                           env={"PICOCHARGE_ADMIN_TOKEN": ADMIN_TOKEN}).start()
    stations: list[Station] = []
    stop = threading.Event()
    rng = random.Random(1234)
    kills = 0
    try:
        assert re.search(r"^MQTT broker guarantee: Mosquitto", server.text, re.M), server.text
        for n in range(STATIONS):
            register(server, f"CRASH-{n:02d}")
        stations = [Station(f"CRASH-{n:02d}", server.ports["mqtt"], stop) for n in range(STATIONS)]
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
        assert server.terminate() == 0, server.text[-3000:]
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
        server.kill()
        pid = _broker_pid(data_dir)
        if pid is not None and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGTERM)  # the broker outlives a killed server by design
