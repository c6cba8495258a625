"""A fleet for crash campaigns: stations that speak real OCPP 1.6-J over WebSocket and
publish QoS 1 MQTT telemetry, and keep a ledger of everything the central system
answered and everything the broker acknowledged, so a test can check afterwards that
none of it was lost.

Each station behaves like a charge point with a transaction journal (OCPP 1.6 §4.7): a
transaction message is sent until it gets a CALLRESULT, across reconnects; a CALLERROR
or a lost connection means "send it again". Sessions are Start → MeterValues × 2 → Stop.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
import websockets


@dataclass
class Ledger:
    """What stations were told (OCPP answers) and acknowledged (broker PUBACKs)."""

    started: dict = field(default_factory=dict)          # (cp, start key) -> transactionId
    start_answers: list = field(default_factory=list)    # (cp, start key, transactionId)
    meter_values: set = field(default_factory=set)       # (transactionId, value)
    stopped: dict = field(default_factory=dict)          # transactionId -> meterStop
    telemetry: set = field(default_factory=set)          # (cp, seq) PUBACKed
    callerrors: int = 0
    reconnects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Station:
    def __init__(self, cp_id: str, key: str, ocpp_port: int, ledger: Ledger,
                 rng: random.Random) -> None:
        self.cp_id = cp_id
        self.key = key
        self.ocpp_port = ocpp_port
        self.ledger = ledger
        self.rng = rng
        self.journal: list[tuple[str, dict]] = []
        self.meter = rng.randrange(0, 10**6) * 1000
        self.session = 0
        self.tx_id: int | None = None
        self.ids = itertools.count()

    def _headers(self) -> dict:
        token = base64.b64encode(f"{self.cp_id}:{self.key}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def _next_session(self) -> None:
        self.session += 1
        self.meter += 1000
        stamp = f"2026-11-30T{self.session // 3600 % 24:02d}:{self.session // 60 % 60:02d}:" \
                f"{self.session % 60:02d}Z"
        self.journal.append(("StartTransaction", {
            "connectorId": 1, "idTag": "CRASH", "meterStart": self.meter, "timestamp": stamp}))

    def _answered(self, action: str, payload: dict, answer: dict) -> None:
        ledger = self.ledger
        with ledger.lock:
            if action == "StartTransaction":
                key = (payload["meterStart"], payload["timestamp"])
                tx_id = answer["transactionId"]
                ledger.start_answers.append((self.cp_id, key, tx_id))
                ledger.started.setdefault((self.cp_id, key), tx_id)
                self.tx_id = tx_id
                start = payload["meterStart"]
                for step in (100, 200):
                    self.journal.append(("MeterValues", {
                        "connectorId": 1, "transactionId": tx_id, "meterValue": [{
                            "timestamp": payload["timestamp"],
                            "sampledValue": [{"value": str(start + step)}]}]}))
                self.journal.append(("StopTransaction", {
                    "transactionId": tx_id, "meterStop": start + 300,
                    "timestamp": payload["timestamp"], "reason": "EVDisconnected"}))
            elif action == "MeterValues":
                ledger.meter_values.add(
                    (payload["transactionId"], payload["meterValue"][0]["sampledValue"][0]["value"]))
            elif action == "StopTransaction":
                ledger.stopped[payload["transactionId"]] = payload["meterStop"]

    async def run(self, stop: asyncio.Event) -> None:
        url = f"ws://127.0.0.1:{self.ocpp_port}/ocpp/{self.cp_id}"
        booted = False
        while not stop.is_set():
            try:
                async with websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=5,
                                              additional_headers=self._headers(),
                                              ping_interval=None) as ws:
                    if not booted:
                        await self._call(ws, "BootNotification",
                                         {"chargePointVendor": "Crash", "chargePointModel": "Fleet"})
                        booted = True
                    while not stop.is_set():
                        if not self.journal:
                            self._next_session()
                        action, payload = self.journal[0]
                        kind, answer = await self._call(ws, action, payload)
                        if kind == 3:
                            self.journal.pop(0)
                            self._answered(action, payload, answer)
                        else:
                            with self.ledger.lock:
                                self.ledger.callerrors += 1
                            await asyncio.sleep(0.2)
                        await asyncio.sleep(self.rng.uniform(0.02, 0.1))
            except (OSError, websockets.exceptions.WebSocketException, TimeoutError):
                pass
            with self.ledger.lock:
                self.ledger.reconnects += 1
            await asyncio.sleep(self.rng.uniform(0.05, 0.25))

    async def _call(self, ws, action: str, payload: dict) -> tuple[int, dict]:
        unique = f"{self.cp_id}-{next(self.ids)}"
        await ws.send(json.dumps([2, unique, action, payload]))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame[1] == unique:
                return frame[0], frame[2] if frame[0] == 3 else {"error": frame[2]}


class TelemetryPublisher:
    """One station's MQTT side: QoS 1 telemetry; what the broker PUBACKs goes in the ledger."""

    def __init__(self, cp_id: str, broker_port: int, ledger: Ledger) -> None:
        self.cp_id = cp_id
        self.ledger = ledger
        self.seq = 0
        self.pending: dict[int, int] = {}
        self.early: set[int] = set()  # message ids acknowledged before publish() noted them
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"crash-{cp_id}")
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", broker_port)
        self.client.loop_start()

    # paho calls on_publish holding its own message lock, and publish() takes that lock: our
    # lock is never held across client.publish(), or the two threads wait for each other
    # for good (seen beside a CPU hog: the campaign hung in close() for its whole timeout).
    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            seq = self.pending.pop(mid, None)
            if seq is None:
                self.early.add(mid)  # the PUBACK overtook publish()'s bookkeeping
        if seq is not None:
            self._acknowledged(seq)

    def _acknowledged(self, seq: int) -> None:
        with self.ledger.lock:
            self.ledger.telemetry.add((self.cp_id, seq))

    def publish(self) -> None:
        self.seq += 1
        seq = self.seq
        body = json.dumps({"ts": time.time(), "seq": seq, "v": 230.0, "a": 16.0})
        info = self.client.publish(f"picocharge/{self.cp_id}/telemetry", body, qos=1)
        with self.lock:
            acked = info.mid in self.early
            if acked:
                self.early.discard(info.mid)
            else:
                self.pending[info.mid] = seq
        if acked:
            self._acknowledged(seq)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def check(ledger: Ledger, db) -> dict:
    """Every answered transaction exists once with the right owner, start, meter values and
    stop; no id was handed out twice; every acknowledged telemetry message is stored."""
    by_id = defaultdict(set)
    for cp_id, key, tx_id in ledger.start_answers:
        by_id[tx_id].add((cp_id, key))
    reused = {tx: keys for tx, keys in by_id.items() if len(keys) > 1}
    rows = {row[0]: row for row in db.execute(
        "SELECT id, cp_id, meter_start, start_timestamp, meter_stop FROM transactions")}
    missing, wrong = [], []
    for (cp_id, (meter_start, stamp)), tx_id in ledger.started.items():
        row = rows.get(tx_id)
        if row is None:
            missing.append(tx_id)
        elif (row[1], row[2], row[3]) != (cp_id, meter_start, stamp):
            wrong.append((tx_id, row))
    stored_values = set(db.execute(
        "SELECT transaction_id, value FROM meter_values WHERE transaction_id IS NOT NULL"))
    lost_values = ledger.meter_values - stored_values
    lost_stops = [tx for tx, meter_stop in ledger.stopped.items()
                  if rows.get(tx) is None or rows[tx][4] != meter_stop]
    stored_telemetry = set(db.execute("SELECT cp_id, seq FROM telemetry"))
    lost_telemetry = ledger.telemetry - stored_telemetry
    return {"transactions_answered": len(ledger.started), "start_answers": len(ledger.start_answers),
            "meter_values_answered": len(ledger.meter_values), "stops_answered": len(ledger.stopped),
            "telemetry_acknowledged": len(ledger.telemetry), "callerrors": ledger.callerrors,
            "reconnects": ledger.reconnects, "missing": missing, "wrong_owner_or_start": wrong,
            "ids_reused": reused, "lost_meter_values": sorted(lost_values),
            "lost_stops": lost_stops, "lost_telemetry": sorted(lost_telemetry)}
