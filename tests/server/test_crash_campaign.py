"""The crash campaign: 50 stations run charging sessions over OCPP and publish MQTT
telemetry while the central system is killed with SIGKILL at random moments, 30 times, and
restarted. Afterwards every transaction any station was given an id for exists exactly
once with the right owner and its meter values and stop, no id was handed out twice, and
every telemetry message the broker acknowledged to a station is stored.

The broker here is a separate Mosquitto that the kills do not touch (what a production
deployment runs); the embedded broker's own survival of a server crash is tested with it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import threading
import time

import pytest
from conftest import free_port
from crashfleet import Ledger, Station, TelemetryPublisher, check
from serverproc import ServerProcess

from tests.waiting import wait_until

STATIONS = 50
KILLS = int(os.environ.get("PICOCHARGE_CRASH_KILLS", "30"))
KEY = "crash-campaign-station-key"


def _stored_telemetry(data_dir) -> int:
    db = sqlite3.connect(data_dir / "picocharge.db")
    try:
        return db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]
    finally:
        db.close()


@pytest.mark.slow(seconds=100)
@pytest.mark.cpu_hungry
@pytest.mark.timeout(600)  # niced: on a busy machine it yields the CPU and takes longer
def test_sigkill_campaign_loses_nothing_that_was_answered_or_acknowledged(tmp_path, mosquitto):
    rng = random.Random(int(os.environ.get("PICOCHARGE_CRASH_SEED", "20261130")))
    data_dir = tmp_path / "var"
    ocpp_port = free_port()
    ledger = Ledger()
    args = ("--auto-register", "--mqtt-url", mosquitto["url"])
    server = ServerProcess(data_dir, *args, ocpp_port=ocpp_port).start()
    publishers = [TelemetryPublisher(f"CRASH-{n:03d}", mosquitto["port"], ledger)
                  for n in range(STATIONS)]
    publishing = threading.Event()

    def publish_loop() -> None:
        while not publishing.is_set():
            for publisher in publishers:
                publisher.publish()
            publishing.wait(0.5)

    publisher_thread = threading.Thread(target=publish_loop, daemon=True)
    publisher_thread.start()
    kills = []

    async def campaign() -> None:
        nonlocal server
        stop = asyncio.Event()
        stations = [Station(f"CRASH-{n:03d}", KEY, ocpp_port, ledger, random.Random(rng.random()))
                    for n in range(STATIONS)]
        tasks = [asyncio.create_task(s.run(stop)) for s in stations]
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.3, 2.0))
            server.kill()
            kills.append(time.monotonic())
            server = await asyncio.to_thread(
                lambda: ServerProcess(data_dir, *args, ocpp_port=ocpp_port).start())
        await asyncio.sleep(2.0)  # a last stretch of sessions on the surviving server
        stop.set()
        await asyncio.wait(tasks, timeout=30)

    try:
        asyncio.run(campaign())
        publishing.set()
        publisher_thread.join(10)
        for publisher in publishers:
            publisher.close()
        # the ingest drains what the broker still holds for it, then a clean stop
        # (what is still missing after the wait is reported by check() below)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: _stored_telemetry(data_dir) >= len(ledger.telemetry), 60,
                       "the ingest to drain the broker", interval=0.2)
        assert server.terminate() == 0, server.text[-3000:]
    finally:
        server.kill()
        publishing.set()

    db = sqlite3.connect(data_dir / "picocharge.db")
    result = check(ledger, db)
    db.close()
    print(f"\ncrash campaign: {len(kills)} SIGKILLs, {STATIONS} stations, "
          f"{result['transactions_answered']} transactions answered "
          f"({result['start_answers']} StartTransaction answers incl. retransmissions), "
          f"{result['meter_values_answered']} MeterValues and {result['stops_answered']} stops "
          f"answered, {result['telemetry_acknowledged']} telemetry messages acknowledged, "
          f"{result['callerrors']} CALLERRORs, {result['reconnects']} reconnects; missing "
          f"{len(result['missing'])}, ids reused {len(result['ids_reused'])}, lost meter values "
          f"{len(result['lost_meter_values'])}, lost stops {len(result['lost_stops'])}, lost "
          f"telemetry {len(result['lost_telemetry'])}")
    assert len(kills) == KILLS
    assert result["transactions_answered"] >= STATIONS  # the campaign really ran sessions
    assert result["telemetry_acknowledged"] >= STATIONS * 10
    assert result["missing"] == []
    assert result["wrong_owner_or_start"] == []
    assert result["ids_reused"] == {}
    assert result["lost_meter_values"] == []
    assert result["lost_stops"] == []
    assert result["lost_telemetry"] == []
