"""An operation to a charge point holds an HTTP worker while it waits, so every wait is
bounded: the timeout has a documented cap, a disconnect ends the pending and the queued
calls at once, and operations never take the workers /health and reads need."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from tests.server.conftest import charge_point, http, raw_socket, register, run, wait_until

NEVER = 120  # the documented maximum timeout: a call that is not released waits this long


def _health_within(app, seconds: float) -> int:
    url = f"http://127.0.0.1:{app.ports['http']}/api/v1/health"
    with urllib.request.urlopen(url, timeout=seconds) as response:
        return response.status


def test_operation_timeout_above_the_documented_cap_is_refused_before_reaching_the_station(server):
    register(server, "CP-CAP")
    status, document = http(server, "GET", "/api/v1/openapi.json")
    timeout_schema = next(p["schema"] for p in
                          document["paths"]["/chargepoints/{cp_id}/ClearCache"]["post"]["parameters"]
                          if p["name"] == "timeout")
    assert timeout_schema["maximum"] == 120 and timeout_schema["minimum"] == 0.1

    async def scenario():
        async with charge_point(server, "CP-CAP") as cp:
            answers = [await asyncio.to_thread(
                http, server, "POST", f"/api/v1/chargepoints/CP-CAP/ClearCache?timeout={t}", {})
                for t in ("1000000000", "120.5", "0", "nan", "120")]
            return answers, [action for action, _ in cp.received]

    answers, received = run(scenario())
    for status, body in answers[:4]:
        assert status == 400 and body["field"] == "timeout", body
    assert answers[4][0] == 200, answers[4]
    assert received == ["ClearCache"]  # only the call within the cap reached the station


def test_station_disconnect_fails_the_pending_and_the_queued_operations_at_once(server):
    register(server, "CP-GONE")
    pool = ThreadPoolExecutor(max_workers=4)

    def timed_call():
        status, body = http(server, "POST", f"/api/v1/chargepoints/CP-GONE/ClearCache?timeout={NEVER}", {})
        return status, body, time.monotonic()

    async def scenario():
        loop = asyncio.get_running_loop()
        async with raw_socket(server, "CP-GONE") as ws:  # a station that never answers
            calls = [loop.run_in_executor(pool, timed_call) for _ in range(3)]
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert frame[0] == 2 and frame[2] == "ClearCache"
            # one call is pending on the station, two are queued behind it (30 s: three
            # requests reach a loaded server slowly)
            await loop.run_in_executor(
                pool, wait_until, lambda: server.central.counters["operations"] >= 3, 30,
                "three operations waiting")
            closed_at = time.monotonic()
            await ws.close()
        return closed_at, await asyncio.wait_for(asyncio.gather(*calls), 2 * NEVER)

    try:
        closed_at, results = run(scenario(), timeout=3 * NEVER)
    finally:
        pool.shutdown(wait=False)
    for status, body, _ in results:
        assert status == 409 and "disconnected" in body["reason"], body
    released_after = max(done - closed_at for _, _, done in results)
    print(f"\nthree waiting operations released {released_after * 1000:.0f} ms after the disconnect")
    assert released_after < 5, released_after


def test_operations_waiting_on_stations_never_take_the_last_http_workers(server):
    # Nine operations with the longest timeout to a station that never answers (8 HTTP
    # workers): six wait, three are refused at once, /health keeps answering.
    register(server, "CP-MUTE")
    pool = ThreadPoolExecutor(max_workers=10)

    def call():
        return http(server, "POST", f"/api/v1/chargepoints/CP-MUTE/ClearCache?timeout={NEVER}", {})

    async def scenario():
        loop = asyncio.get_running_loop()
        async with raw_socket(server, "CP-MUTE") as ws:
            calls = [loop.run_in_executor(pool, call) for _ in range(9)]
            await asyncio.wait_for(ws.recv(), 30)
            # (30 s: nine requests from nine threads reach a loaded server slowly)
            await loop.run_in_executor(
                pool, wait_until, lambda: server.central.counters["operations_refused_busy"] >= 3, 30,
                "three operations refused as busy")
            health = await loop.run_in_executor(pool, _health_within, server, 5)
            # an admitted operation holds its worker before its CALL is counted as sent: on
            # a loaded host the sixth may still be on its way (it must get there, not more)
            await loop.run_in_executor(
                pool, wait_until, lambda: server.central.counters["operations"] >= 6, 30,
                "six operations sent to the station")
            waiting = server.central.counters["operations"]
            await ws.close()
        return health, waiting, await asyncio.wait_for(asyncio.gather(*calls), 2 * NEVER)

    try:
        health, waiting, results = run(scenario(), timeout=3 * NEVER)
    finally:
        pool.shutdown(wait=False)
    statuses = sorted(status for status, _ in results)
    assert health == 200
    assert waiting == 6 and statuses == [409] * 6 + [429] * 3, (waiting, results)
