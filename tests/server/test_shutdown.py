"""``python -m server`` prints its URLs, and SIGTERM loses nothing it accepted."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
import urllib.request

import paho.mqtt.client as mqtt
import websockets
from serverproc import ServerProcess

from tests.server.conftest import ADMIN_TOKEN


def _start(tmp_path) -> tuple[ServerProcess, dict]:
    server = ServerProcess(tmp_path / "var", "--auto-register",
                           env={"PICOCHARGE_ADMIN_TOKEN": ADMIN_TOKEN}).start()
    return server, {**server.ports, "output": server.text}


def test_sigterm_after_accepted_messages_loses_nothing(tmp_path):
    server, info = _start(tmp_path)
    try:
        assert f"PicoCharge dashboard: http://127.0.0.1:{info['http']}/" in info["output"]
        key = "shutdown-key-CP-SIG-0123456789"  # the broker admits registered stations only
        request = urllib.request.Request(
            f"http://127.0.0.1:{info['http']}/api/v1/chargepoints", method="POST",
            data=json.dumps({"id": "CP-SIG", "auth_key": key}).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {ADMIN_TOKEN}"})
        urllib.request.urlopen(request, timeout=10).close()
        board = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="CP-SIG")
        board.username_pw_set("CP-SIG", key)
        board.reconnect_delay_set(0.1, 1)
        board.connect("127.0.0.1", info["mqtt"])
        board.loop_start()
        deadline = time.monotonic() + 10
        while not board.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        for seq in range(1, 201):
            board.publish("picocharge/CP-SIG/telemetry",
                          json.dumps({"ts": time.time(), "seq": seq, "v": 230.0}),
                          qos=1).wait_for_publish(5)
        board.loop_stop()

        async def ocpp_traffic():
            auth = base64.b64encode(f"CP-SIG:{key}".encode()).decode()
            async with websockets.connect(f"ws://127.0.0.1:{info['ocpp']}/ocpp/CP-SIG",
                                          subprotocols=["ocpp1.6"],
                                          additional_headers={"Authorization": f"Basic {auth}"}) as ws:
                frames = [[2, "b", "BootNotification", {"chargePointVendor": "V",
                                                        "chargePointModel": "M"}]]
                frames += [[2, f"s{i}", "StatusNotification",
                            {"connectorId": 1, "errorCode": "NoError",
                             "status": "Charging" if i % 2 else "Available"}] for i in range(50)]
                frames.append([2, "tx", "StartTransaction", {"connectorId": 1, "idTag": "T",
                                                             "meterStart": 5,
                                                             "timestamp": "2024-01-01T00:00:00Z"}])
                for frame in frames:
                    await ws.send(json.dumps(frame))
                    answer = json.loads(await ws.recv())
                    assert answer[0] == 3, answer
                return answer[2]["transactionId"]

        tx_id = asyncio.run(ocpp_traffic())
        assert server.terminate(30) == 0, server.text
        out = server.text
        assert "PicoCharge stopped" in out
    finally:
        server.kill()

    db = sqlite3.connect(tmp_path / "var" / "picocharge.db")
    assert db.execute("SELECT COUNT(*) FROM telemetry WHERE cp_id='CP-SIG'").fetchone()[0] == 200
    assert db.execute("SELECT COUNT(*) FROM status_history WHERE cp_id='CP-SIG'").fetchone()[0] == 50
    assert db.execute("SELECT id FROM transactions").fetchall() == [(tx_id,)]
    assert db.execute("SELECT ocpp_online FROM chargepoints WHERE id='CP-SIG'").fetchone() == (0,)
