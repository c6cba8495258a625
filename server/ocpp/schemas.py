"""The official OCPP 1.6 JSON schemas (as shipped in the published ``ocpp`` package),
compiled once into validators per action and direction."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import ocpp.v16
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import best_match

from server.ocpp.errors import OcppError, code_for_schema_error, describe_schema_error
from server.timeutil import parse_time
from server.validation import FastValidator

SCHEMA_DIR = Path(ocpp.v16.__file__).parent / "schemas"

# Messages a charge point sends (we answer them) and the central system sends (operations).
CHARGE_POINT_ACTIONS = (
    "Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification",
    "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StartTransaction",
    "StatusNotification", "StopTransaction",
)
CENTRAL_SYSTEM_ACTIONS = (
    "CancelReservation", "ChangeAvailability", "ChangeConfiguration", "ClearCache",
    "ClearChargingProfile", "DataTransfer", "GetCompositeSchedule", "GetConfiguration",
    "GetDiagnostics", "GetLocalListVersion", "RemoteStartTransaction", "RemoteStopTransaction",
    "ReserveNow", "Reset", "SendLocalList", "SetChargingProfile", "TriggerMessage",
    "UnlockConnector", "UpdateFirmware",
)
# Every action with a schema in the directory is "known" (1.6 core profiles plus the 1.6
# security extension); known but unhandled → NotSupported, unknown → NotImplemented.
KNOWN_ACTIONS = frozenset(
    p.stem for p in SCHEMA_DIR.glob("*.json") if not p.stem.endswith("Response"))

_format_checker = FormatChecker(formats=())


@_format_checker.checks("date-time", raises=(ValueError, TypeError))
def _is_date_time(value) -> bool:
    if not isinstance(value, str):
        return True
    if "T" not in value:
        raise ValueError("not an ISO 8601 date-time")
    parse_time(value)
    return True


@cache
def schema(action: str, response: bool = False) -> dict:
    name = f"{action}{'Response' if response else ''}.json"
    with open(SCHEMA_DIR / name, encoding="utf-8") as handle:
        return json.load(handle)


def _date_time_ok(value) -> bool:
    try:
        return _is_date_time(value)
    except (ValueError, TypeError):
        return False


@cache
def validator(action: str, response: bool = False) -> FastValidator:
    return FastValidator(Draft4Validator(schema(action, response), format_checker=_format_checker),
                         # jsonschema checks date-time only (our checker); uri is not checked
                         formats={"date-time": _date_time_ok, "uri": lambda value: True})


def validate(action: str, payload, response: bool = False) -> None:
    """Raise :class:`OcppError` with the 1.6 code if payload violates the schema."""
    errors = validator(action, response).errors(payload)
    if errors:
        error = best_match(errors)
        raise OcppError(code_for_schema_error(error), describe_schema_error(error),
                        {"path": "/".join(str(p) for p in error.absolute_path),
                         "keyword": error.validator})


def precompile() -> None:
    """Build every validator up front so the first message pays no compile cost."""
    for action in CHARGE_POINT_ACTIONS + CENTRAL_SYSTEM_ACTIONS:
        validator(action)
        validator(action, True)
