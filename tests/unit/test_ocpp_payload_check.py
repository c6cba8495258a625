"""firmware/lib/ocpp_check.py: the payload validator of a CALL from the central system
(`check`, spec format in ocpp_rpc's docstring) and the action -> feature table (`route`).
Each wrong payload gets the OCPP 1.6 error code the spec names: a missing required field
OccurenceConstraintViolation, a wrong JSON type TypeConstraintViolation, a wrong value
PropertyConstraintViolation, a payload that is no object FormationViolation."""

from __future__ import annotations

import sys

import pytest

from tests.unit.fwimport import firmware_imports, load

pytestmark = pytest.mark.unit

ocpp_check = load("ocpp_check")
ocpp_rpc = load("ocpp_rpc")
CallError = ocpp_rpc.CallError

FORMATION = "FormationViolation"
OCCURENCE = "OccurenceConstraintViolation"
TYPE = "TypeConstraintViolation"
PROPERTY = "PropertyConstraintViolation"

# the firmware's own specs (ocpp_core.Core.HANDLERS), copied so a test reads on its own
RESET = {"type": "!e:Hard|Soft"}
CHANGE_CONFIGURATION = {"key": "!s50", "value": "!s500"}
REMOTE_START = {"connectorId": "i", "idTag": "!s20", "chargingProfile": "o"}
EVERY_KIND = {"s": "s", "s3": "s3", "t": "t", "e": "e:A|B", "i": "i", "d": "d", "b": "b",
              "o": "o", "a": "a"}


def refused(payload, spec, where=""):
    with pytest.raises(CallError) as info:
        ocpp_check.check(payload, spec, where)
    return info.value.code, info.value.description


def test_a_fitting_payload_is_returned_as_it_is():
    payload = {"connectorId": 1, "idTag": "A" * 20, "chargingProfile": {}, "extra": [1]}
    assert ocpp_check.check(payload, REMOTE_START) is payload
    assert ocpp_check.check({"type": "Soft"}, RESET) == {"type": "Soft"}
    good = {"s": "x" * 1000, "s3": "abc", "t": "2026-11-26T10:00:00Z", "e": "B", "i": -7,
            "d": 2.5, "b": False, "o": {"k": None}, "a": []}
    assert ocpp_check.check(good, EVERY_KIND) is good


def test_optional_fields_may_be_missing_and_unknown_fields_are_ignored():
    assert ocpp_check.check({}, EVERY_KIND) == {}
    assert ocpp_check.check({"idTag": "T", "vendorSpecific": 1}, REMOTE_START)


@pytest.mark.parametrize("payload", [[], "Reset", None, 3, [{"type": "Hard"}]])
def test_a_payload_that_is_not_an_object_is_a_formation_violation(payload):
    code, text = refused(payload, RESET)
    assert code == FORMATION
    assert text == "payload is not an object"


def test_a_missing_required_field_is_an_occurence_violation_named_with_its_place():
    assert refused({}, RESET) == (OCCURENCE, "type is required")
    assert refused({"key": "K"}, CHANGE_CONFIGURATION) == (OCCURENCE, "value is required")
    assert refused({"idTag": "X"}, {"idTagInfo": "!o"}, "idTagInfo.") == (
        OCCURENCE, "idTagInfo.idTagInfo is required")
    assert refused([], RESET, " of idTagInfo")[1] == "payload of idTagInfo is not an object"


@pytest.mark.parametrize("field,value,message", [
    ("s", 5, "s must be a string"),
    ("s3", None, "s3 must be a string"),
    ("t", 1700000000, "t must be a string"),
    ("e", ["A"], "e must be a string"),
    ("i", 1.0, "i must be an integer"),  # JSON 1.0 is a number, not an integer
    ("i", "1", "i must be an integer"),
    ("i", True, "i must be an integer"),  # bool is an int in Python, never in JSON
    ("i", None, "i must be an integer"),
    ("d", "2.5", "d must be a number"),
    ("d", False, "d must be a number"),
    ("b", 0, "b must be a boolean"),
    ("b", "true", "b must be a boolean"),
    ("o", [], "o must be an object"),
    ("o", "{}", "o must be an object"),
    ("a", {}, "a must be an array"),
    ("a", "[]", "a must be an array"),
])
def test_a_value_of_the_wrong_json_type_is_a_type_violation(field, value, message):
    assert refused({field: value}, EVERY_KIND) == (TYPE, message)


def test_numbers_accept_integers_and_decimals_but_integers_only_integers():
    assert ocpp_check.check({"d": 3}, EVERY_KIND) == {"d": 3}
    assert ocpp_check.check({"d": -0.5}, EVERY_KIND) == {"d": -0.5}
    assert ocpp_check.check({"i": 10**12}, EVERY_KIND) == {"i": 10**12}


def test_a_string_over_its_length_is_a_property_violation_at_exactly_one_more():
    assert ocpp_check.check({"idTag": "A" * 20}, REMOTE_START)
    assert refused({"idTag": "A" * 21}, REMOTE_START) == (PROPERTY, "idTag is longer than 20")
    assert ocpp_check.check({"key": "", "value": "v" * 500}, CHANGE_CONFIGURATION)
    assert refused({"key": "k", "value": "v" * 501}, CHANGE_CONFIGURATION) == (
        PROPERTY, "value is longer than 500")


def test_an_enumeration_takes_only_its_listed_values_exactly():
    for value in ("Hard", "Soft"):
        assert ocpp_check.check({"type": value}, RESET)
    for value in ("hard", "", "Hard|Soft", "Soft ", "e:Hard"):
        assert refused({"type": value}, RESET) == (PROPERTY, "type: %s is not allowed" % value)


@pytest.mark.parametrize("text", [
    "2026-11-26T10:00:00Z", "2026-11-26T10:00:00.123Z", "2026-11-26T10:00:00+01:00",
    "2026-11-26T10:00:00", "2026-11-26 10:00:00z", "2026-11-26T23:59:60-05:30",
])
def test_an_iso_8601_date_time_is_taken(text):
    assert ocpp_check.check({"t": text}, EVERY_KIND)


@pytest.mark.parametrize("text", [
    "", "now", "2026-11-26", "2026-11-26T10:00", "26.11.2026 10:00:00",
    "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z", "2026-11-32T00:00:00Z",
    "2026-11-26T24:00:00Z", "2026-11-26T10:60:00Z", "2026-11-26T10:00:00 CET",
    "2026-11-26T10:00:00+0100", "2026-11-26X10:00:00Z", "YYYY-11-26T10:00:00Z",
])
def test_anything_else_in_a_date_time_field_is_a_property_violation(text):
    assert refused({"t": text}, EVERY_KIND) == (PROPERTY, "t is not a date-time")


# A regression: clock.parse_iso checked the separators at [4] and [10] only, no day
# against its month, no offset range, and int() took a sign or a space: these read as
# (other) times instead of being refused. (More cases in test_clock_iso.py.)
@pytest.mark.parametrize("text", [
    "2026-11-26T10-00-00Z",       # wrong separators: read as 10:00:00
    "2026-02-30T00:00:00Z",       # no 30 February: read as 2 March
    "2026-04-31T00:00:00Z",       # no 31 April: read as 1 May
    "2026-11-26T10:00:00+01:99",  # no 99 minutes of offset
    "2026-11-26T10:00:00+25:00",  # beyond any offset (ISO 8601 ends at 23:59)
    "2026-+1-26T10:00:00Z",       # a sign in the month
    "2026-11-26T 1:00:00Z",       # a space in the hour
])
def test_a_malformed_or_impossible_date_time_is_a_property_violation(text):
    assert refused({"t": text}, EVERY_KIND) == (PROPERTY, "t is not a date-time")


def test_the_first_field_of_the_spec_that_fails_is_the_one_reported():
    spec = {"connectorId": "!i", "type": "!e:Inoperative|Operative"}
    assert refused({"type": "x"}, spec) == (OCCURENCE, "connectorId is required")
    assert refused({"connectorId": "1", "type": "x"}, spec) == (TYPE, "connectorId must be an integer")
    assert refused({"connectorId": 1, "type": "x"}, spec) == (PROPERTY, "type: x is not allowed")


def test_ocpp_rpc_check_uses_this_validator_and_drops_it_again():
    # code paging: ocpp_rpc.check loads ocpp_check for one answer and unloads it after
    with firmware_imports():
        sys.modules.pop("ocpp_check", None)
        with pytest.raises(CallError) as info:
            ocpp_rpc.check({"status": 1}, {"status": "!e:Accepted|Blocked"}, "idTagInfo.")
        assert "ocpp_check" not in sys.modules
    assert (info.value.code, info.value.description) == (TYPE, "idTagInfo.status must be a string")


@pytest.mark.parametrize("action,feature", [
    ("Reset", "core"), ("ChangeConfiguration", "core"), ("RemoteStopTransaction", "core"),
    ("ClearCache", "auth"), ("SendLocalList", "auth"), ("ReserveNow", "resv"),
    ("SetChargingProfile", "smart"), ("GetCompositeSchedule", "smart"),
    ("TriggerMessage", "trigger"), ("UpdateFirmware", "fw"), ("GetDiagnostics", "fw"),
    # the first and the last entry of the table, and one at a line end
    ("GetConfiguration", "core"), ("SignedUpdateFirmware", "-"), ("GetDiagnostics", "fw"),
    # actions the charge point sends, never takes
    ("BootNotification", "-"), ("Heartbeat", "-"), ("StopTransaction", "-"),
])
def test_each_call_goes_to_its_feature(action, feature):
    assert ocpp_check.route(action) == feature


@pytest.mark.parametrize("action", [
    "", "reset", "Resets", "eset", "Transaction", "Reset=core", "Reset core", "core",
    "=core", "-", "Reset ", " Reset", "Reset\n",
])
def test_an_unknown_or_malformed_action_has_no_route(action):
    assert ocpp_check.route(action) is None
