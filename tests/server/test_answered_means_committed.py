"""What the central system answered is committed: a server killed (SIGKILL) right after
answering 60 StartTransactions still holds all 60 after a restart, and no transaction id
is ever handed out twice."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3

import websockets
from serverproc import ServerProcess

KEY = "answered-means-committed-key"


def _headers(cp_id: str) -> dict:
    token = base64.b64encode(f"{cp_id}:{KEY}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def _starts(port: int, cp_id: str, count: int, first_meter: int) -> list[int]:
    """Boot, then StartTransactions as a journal flushes them after an outage."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/ocpp/{cp_id}", subprotocols=["ocpp1.6"],
                                  additional_headers=_headers(cp_id), ping_interval=None) as ws:
        await ws.send(json.dumps([2, "boot", "BootNotification",
                                  {"chargePointVendor": "V", "chargePointModel": "M"}]))
        assert json.loads(await ws.recv())[2]["status"] == "Accepted"
        ids = []
        for i in range(count):
            await ws.send(json.dumps([2, f"s{i}", "StartTransaction", {
                "connectorId": 1, "idTag": "TAG", "meterStart": first_meter + i,
                "timestamp": f"2026-11-30T10:{i // 60:02d}:{i % 60:02d}Z"}]))
            answer = json.loads(await ws.recv())
            assert answer[0] == 3, answer
            ids.append(answer[2]["transactionId"])
        return ids


def test_transactions_answered_before_a_sigkill_exist_after_the_restart(tmp_path):
    data_dir = tmp_path / "var"
    server = ServerProcess(data_dir, "--auto-register").start()
    try:
        answered = asyncio.run(_starts(server.ports["ocpp"], "CP-KILL", 60, 1000))
    finally:
        server.kill()  # at once after the last answer
    assert len(set(answered)) == 60

    db = sqlite3.connect(data_dir / "picocharge.db")
    stored = dict(db.execute("SELECT id, cp_id FROM transactions").fetchall())
    db.close()
    assert {tx: stored.get(tx) for tx in answered} == {tx: "CP-KILL" for tx in answered}

    again = ServerProcess(data_dir).start()
    try:
        later = asyncio.run(_starts(again.ports["ocpp"], "CP-KILL", 3, 5000))
        # the same journal flushed once more maps to the same ids, never to new ones
        repeated = asyncio.run(_starts(again.ports["ocpp"], "CP-KILL", 60, 1000))
    finally:
        again.kill(broker_too=True)
    assert min(later) > max(answered)
    assert repeated == answered
