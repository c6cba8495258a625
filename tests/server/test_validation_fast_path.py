"""The compiled fast path of schema validation never accepts what jsonschema refuses:
for every OCPP 1.6 schema (both directions) and the telemetry contract, a valid payload
built from the schema and hundreds of mutations of it (wrong types, booleans for numbers,
1.0 for integers, bad dates, long strings, missing and extra keys) get the same verdict
from `FastValidator.errors` as from jsonschema alone."""

import copy

import pytest

from server.mqtt.telemetry import TELEMETRY_VALIDATOR
from server.ocpp.schemas import CENTRAL_SYSTEM_ACTIONS, CHARGE_POINT_ACTIONS, validator

pytestmark = pytest.mark.unit  # pure: starts no process, board, broker or server

ODD_VALUES = [True, False, 0, 1, 1.0, 1.5, -1, 10**20, "", "x", "x" * 600, None, [], {},
              [1], {"a": 1}, "2026-11-26T10:00:00Z", "2026-11-26", "not a date", "Accepted"]


def example(schema):
    """A valid value for a (draft 4 / simple) schema."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: example(props[k]) for k in props}
    if kind == "array":
        return [example(schema.get("items", {}))]
    if kind == "string":
        return "2026-11-26T10:00:00Z" if schema.get("format") == "date-time" else "a"
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return max(1.5, schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    return "a"


def mutations(value, schema):
    yield value
    yield from ODD_VALUES
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in list(value):
            less = dict(value)
            del less[key]
            yield less
            for sub in mutations(value[key], props.get(key, {})):
                changed = dict(value)
                changed[key] = sub
                yield changed
        yield dict(value, unexpected=1)
    elif isinstance(value, list) and value:
        for sub in mutations(value[0], schema.get("items", {})):
            yield [sub]
        yield []
        yield value * 3


def cases():
    for action in CHARGE_POINT_ACTIONS + CENTRAL_SYSTEM_ACTIONS:
        for response in (False, True):
            yield f"{action}{'Response' if response else ''}", validator(action, response)
    yield "telemetry", TELEMETRY_VALIDATOR


@pytest.mark.parametrize("name,fast", list(cases()), ids=[c[0] for c in cases()])
def test_the_fast_path_gives_jsonschemas_verdict(name, fast):
    schema = fast.validator.schema
    valid = example(schema)
    checked = refused = 0
    for payload in mutations(copy.deepcopy(valid), schema):
        slow = list(fast.validator.iter_errors(payload))
        assert bool(fast.errors(payload)) == bool(slow), (name, payload)
        checked += 1
        refused += bool(slow)
    assert fast.errors(valid) == [] and fast.compiled_accepts(valid), (name, valid)
    assert refused > 0 and checked > len(ODD_VALUES)
