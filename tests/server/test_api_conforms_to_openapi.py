"""Schemathesis against the live OpenAPI document of a server this test starts: generated
requests (valid and invalid) to every documented operation; no 5xx, answers with the
documented status codes, content types and schemas, invalid input refused with a 4xx.

Two passes over every operation: one with generated path parameters (mostly unknown
records: 404s), one with the path parameters of records that exist (a registered charge
point that is connected and answers every OCPP operation, an idTag, a channel), seeded
again before each operation because generated DELETEs remove them.

Bounded run: a few examples per operation, pass and generation mode
(SCHEMATHESIS_EXAMPLES overrides), so it fits in about a minute on a loaded 2-core
machine. The operations are dealt into SHARDS parts, each run against its own server on
its own xdist worker. Every failure is collected (not only the first) and reported together.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import urllib.parse
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from server.validation import FastValidator
from tests.server.conftest import (
    ADMIN_TOKEN,
    ChargePointClient,
    charge_point,
    http,
    station_key,
)

EXAMPLES_PER_OPERATION = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "30"))
SHARDS = 2
STATION_TIMEOUT = 0.5
KNOWN = {"cp_id": "CP-FUZZ", "id_tag": "TAG-FUZZ", "channel_id": 4242, "tx_id": 1}


@pytest.fixture
def api_headers() -> dict:
    """Headers every request of this test carries (the one place an API token goes)."""
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def live_api(start_server, monkeypatch):
    # Bridge URLs are checked by resolving their host (the SSRF guard): during the run no
    # name is looked up outside this machine; every name "resolves" to one public address
    # that is never contacted.
    monkeypatch.setattr("server.net_guard.resolve_checked", lambda host, port, allow_private: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))])
    # The bridge never ticks during the run: a generated bridge URL must not be contacted.
    # Thousands of requests in seconds: the per-token rate limit (its own tests) is off.
    return start_server({"thingspeak.bridge_tick": 3600.0, "auth.rate_limit_per_second": 0.0})


def _seed(app, headers: dict) -> None:
    """The records KNOWN names exist (again)."""
    http(app, "POST", "/api/v1/chargepoints",
         {"id": KNOWN["cp_id"], "auth_key": station_key(KNOWN["cp_id"])}, headers=headers)
    http(app, "POST", "/api/v1/idtags", {"id_tag": KNOWN["id_tag"]}, headers=headers)
    http(app, "POST", "/api/v1/thingspeak/channels",
         {"name": "fuzz", "id": KNOWN["channel_id"]}, headers=headers)


class SturdyStation(ChargePointClient):
    """The test's charge point outlives a payload its OCPP library fails on (that call
    just gets no answer: a 504) instead of ending its receive loop."""

    library_failures = 0

    async def route_message(self, raw):
        try:
            await super().route_message(raw)
        except Exception:  # noqa: BLE001 - the library's problem, not the server's
            type(self).library_failures += 1


@pytest.fixture
def connected_station(live_api, api_headers):
    """KNOWN's charge point connected over OCPP, answering every operation, for the test."""
    _seed(live_api, api_headers)
    loop = asyncio.new_event_loop()
    ready, failed = threading.Event(), []
    stop = asyncio.Event()

    async def station():
        try:
            async with charge_point(live_api, KNOWN["cp_id"], cls=SturdyStation):
                ready.set()
                await stop.wait()
        except Exception as exc:  # reported by the fixture below
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(station(),), daemon=True)
    thread.start()
    assert ready.wait(30) and not failed, failed
    yield KNOWN["cp_id"]
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    loop.close()


def _run(operation, mode, headers: dict, tally: Counter, path_parameters=None) -> None:
    # A charge point's own failures are gateway answers (502 CALLERROR, 504 no answer in
    # time: a generated timeout can be 0.1 s) and 429 when too many wait for one:
    # documented, so allowed for the operations that reach a station; 500 never is.
    reaches_station = "operations" in operation.definition.raw.get("tags", ()) and (
        operation.method.upper() == "POST")
    excluded = [not_a_server_error] if reaches_station else []
    # The connected station answers most operations at once; a payload its OCPP library
    # does not answer must not hold the run for a generated timeout of up to 120 s.
    query = {"timeout": STATION_TIMEOUT} if reaches_station and path_parameters else None

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters,
                                      query=query))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def exercise(case):
        if mode == GenerationMode.POSITIVE and path_parameters is None:
            # Schemathesis leaves a generated "%0D" in a path unquoted: the server then
            # reads a carriage return. A positive case must be valid as the server reads it.
            assume(_path_as_received_is_valid(operation, case))
        response = case.call_and_validate(headers=headers, excluded_checks=excluded,
                                          timeout=STATION_TIMEOUT + 30)
        assert response.status_code not in (500, 503), response.text
        tally["requests"] += 1
        tally[f"status {response.status_code}"] += 1

    exercise()


def _causes(exc: BaseException) -> str:
    """What an exception group holds (Hypothesis reports a flaky case as a group whose
    message alone does not name the failure), one line each."""
    inner = getattr(exc, "exceptions", None) or ()
    return "".join(f"\n  caused by {type(e).__name__}: {str(e)[:800]}" for e in inner)


def _path_as_received_is_valid(operation, case) -> bool:
    for parameter in operation.definition.raw.get("parameters", []):
        if parameter["in"] != "path":
            continue
        value = urllib.parse.unquote(str(case.path_parameters[parameter["name"]]))
        if parameter["schema"].get("type") == "integer":
            continue  # quoting does not change digits
        if FastValidator(Draft202012Validator(parameter["schema"])).errors(value):
            return False
    return True


@pytest.mark.slow(seconds=120 / SHARDS)
@pytest.mark.cpu_hungry
@pytest.mark.timeout(600)  # niced: on a busy machine it yields the CPU and takes longer
@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_operation_answers_as_documented_for_generated_requests(
        live_api, api_headers, connected_station, shard):
    url = f"http://127.0.0.1:{live_api.ports['http']}/api/v1/openapi.json"
    schema = schemathesis.openapi.from_url(url, headers=api_headers, timeout=30)
    tally: Counter = Counter()
    failures = []
    every_operation = [result.ok() for result in schema.get_all_operations()]
    operations = every_operation[shard::SHARDS]
    assert operations, "no operation in this shard"
    for operation in operations:
        raw = operation.definition.raw
        path_names = [p["name"] for p in raw.get("parameters", []) if p["in"] == "path"]
        # An operation without parameters or body has no invalid request to generate
        # (With the path fixed to existing records, only query and body can be invalid.)
        takes_input = bool(raw.get("parameters") or raw.get("requestBody"))
        takes_more = len(raw.get("parameters", [])) > len(path_names) or raw.get("requestBody")
        # operators' accounts and tokens are fuzzed with generated names only: the test's
        # own admin token must survive the run
        known = path_names and all(name in KNOWN for name in path_names)
        passes = [None] + ([{name: KNOWN[name] for name in path_names}] if known else [])
        for path_parameters in passes:
            modes = [GenerationMode.POSITIVE]
            if takes_more if path_parameters else takes_input:
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:
                if path_parameters:
                    _seed(live_api, api_headers)
                try:
                    _run(operation, mode, api_headers, tally, path_parameters)
                except (Exception, BaseExceptionGroup) as exc:  # every failure is reported
                    where = "existing records" if path_parameters else "generated ids"
                    failures.append(f"{operation.label} [{mode.value}, {where}]: {exc}"
                                    + _causes(exc))
    print(f"\nschemathesis shard {shard + 1}/{SHARDS}: {len(operations)} of "
          f"{len(every_operation)} operations, {tally['requests']} requests, "
          f"{len(failures)} failing operation/mode/pass combinations, "
          f"{SturdyStation.library_failures} payloads the station's OCPP library failed on; "
          + ", ".join(f"{k}: {v}" for k, v in sorted(tally.items()) if k != "requests"))
    assert not failures, "\n\n".join(failures)
