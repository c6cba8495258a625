"""Schemathesis against the live OpenAPI document of a server this test starts: generated
requests (valid and invalid) to every documented operation; no 5xx, answers with the
documented status codes, content types and schemas, invalid input refused with a 4xx.

Bounded run: a few examples per operation and generation mode (SCHEMATHESIS_EXAMPLES
overrides), so it fits in about a minute on a loaded 2-core machine. Every failure is
collected (not only the first) and reported together.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

EXAMPLES_PER_OPERATION = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "5"))


@pytest.fixture
def api_headers() -> dict:
    """Headers every generated request carries (the one place an API token goes)."""
    return {}


@pytest.fixture
def live_api(start_server):
    # The bridge never ticks during the run: a generated bridge URL must not be contacted.
    return start_server({"thingspeak.bridge_tick": 3600.0})


def _run_operation(operation, mode, headers: dict, tally: Counter) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def exercise(case):
        response = case.call_and_validate(headers=headers)
        tally["requests"] += 1
        tally[f"status {response.status_code}"] += 1

    exercise()


def test_every_operation_answers_as_documented_for_generated_requests(live_api, api_headers):
    url = f"http://127.0.0.1:{live_api.ports['http']}/api/v1/openapi.json"
    schema = schemathesis.openapi.from_url(url, headers=api_headers, timeout=30)
    tally: Counter = Counter()
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        # An operation without parameters or body has no invalid request to generate.
        takes_input = bool(operation.definition.raw.get("parameters")
                           or operation.definition.raw.get("requestBody"))
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (
            GenerationMode.POSITIVE,)
        for mode in modes:
            try:
                _run_operation(operation, mode, api_headers, tally)
            except (Exception, BaseExceptionGroup) as exc:  # every operation's failures are reported
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    print(f"\nschemathesis: {len(operations)} operations, {tally['requests']} requests, "
          f"{len(failures)} failing operation/mode pairs; "
          + ", ".join(f"{k}: {v}" for k, v in sorted(tally.items()) if k != "requests"))
    assert not failures, "\n\n".join(failures)
