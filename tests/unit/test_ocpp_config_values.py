"""firmware/lib/ocpp_core.py, its pure part: `parse_value` (the text of a
ChangeConfiguration turned into the key's type), `change` (the ChangeConfiguration status,
OCPP 1.6 section 5.3: Accepted, Rejected, RebootRequired, NotSupported) and `entries`
(GetConfiguration's configurationKey and unknownKey lists)."""

from __future__ import annotations

import pytest

from tests.unit.fwimport import load

pytestmark = pytest.mark.unit

ocpp_core = load("ocpp_core")
ocpp_config = load("ocpp_config")


@pytest.mark.parametrize("text,value", [
    ("true", True), ("false", False), ("True", True), ("FALSE", False), ("tRuE", True),
])
def test_a_boolean_is_true_or_false_in_any_case(text, value):
    assert ocpp_core.parse_value("b", text) is value


@pytest.mark.parametrize("text", ["1", "0", "", "yes", "on", " true", "true ", "t"])
def test_anything_else_is_no_boolean(text):
    with pytest.raises(ValueError):
        ocpp_core.parse_value("b", text)


@pytest.mark.parametrize("text,value", [("0", 0), ("60", 60), ("007", 7), ("86400", 86400)])
def test_an_integer_is_a_non_negative_decimal(text, value):
    assert ocpp_core.parse_value("i", text) == value


@pytest.mark.parametrize("text", ["-1", "1.5", "", "abc", "0x10", "1e3", "12a"])
def test_a_negative_or_non_integer_text_is_refused(text):
    with pytest.raises(ValueError):
        ocpp_core.parse_value("i", text)


def test_a_measurand_list_is_normalised():
    assert ocpp_core.parse_value("m", "Voltage, Current.Import ,,") == "Voltage,Current.Import"
    assert ocpp_core.parse_value("m", "") == ""
    assert ocpp_core.parse_value("m", " , ") == ""
    six = ",".join(ocpp_core.MEASURANDS)
    assert ocpp_core.parse_value("m", six) == six


@pytest.mark.parametrize("text", [
    "Voltage,Frequency",                      # a measurand this meter does not have
    "voltage",                                # measurands are case-sensitive
    "Energy.Active.Import.Register;Voltage",  # the separator is a comma
    ",".join(["Voltage"] * 7),                # more than MeterValuesSampledDataMaxLength (6)
])
def test_an_unknown_measurand_or_too_many_are_refused(text):
    with pytest.raises(ValueError):
        ocpp_core.parse_value("m", text)


def test_a_string_may_have_500_characters_not_501():
    assert ocpp_core.parse_value("s", "x" * 500) == "x" * 500
    assert ocpp_core.parse_value("s", "") == ""
    with pytest.raises(ValueError):
        ocpp_core.parse_value("s", "x" * 501)


@pytest.fixture
def cfg(fake_flash):
    return ocpp_config.Config(fake_flash, {})


def test_a_change_that_fits_is_accepted_typed_and_saved(cfg, fake_flash):
    assert ocpp_core.change(cfg, "HeartbeatInterval", "120") == "Accepted"
    assert ocpp_core.change(cfg, "LocalPreAuthorize", "true") == "Accepted"
    assert ocpp_core.change(cfg, "MeterValuesSampledData", "Voltage , Power.Active.Import") == "Accepted"
    assert cfg.get("HeartbeatInterval") == 120
    assert cfg.get("LocalPreAuthorize") is True
    assert fake_flash.json("ocpp/config.json") == {
        "HeartbeatInterval": 120, "LocalPreAuthorize": True,
        "MeterValuesSampledData": "Voltage,Power.Active.Import"}


def test_an_unknown_key_is_not_supported_and_a_read_only_one_rejected(cfg, fake_flash):
    assert ocpp_core.change(cfg, "NoSuchKey", "1") == "NotSupported"
    assert ocpp_core.change(cfg, "NumberOfConnectors", "2") == "Rejected"
    assert ocpp_core.change(cfg, "SupportedFeatureProfiles", "Core") == "Rejected"
    assert cfg.values == {} and fake_flash.writes == 0


# A regression (ocpp_config.row() took a key with "|", test_ocpp_config_keys.py): such a
# ChangeConfiguration was Accepted and saved, GetConfiguration listed it.
@pytest.mark.parametrize("key", ["HeartbeatInterval|i", "HeartbeatInterval|i||300",
                                 "LocalPreAuthorize|b"])
def test_a_key_name_with_the_tables_separator_is_not_supported(cfg, fake_flash, key):
    assert ocpp_core.change(cfg, key, "10") == "NotSupported"
    assert ocpp_core.change(cfg, key, "true") == "NotSupported"
    assert cfg.values == {} and fake_flash.writes == 0


def test_get_configuration_names_a_key_with_the_tables_separator_unknown(cfg):
    known, unknown = ocpp_core.entries(cfg, ["HeartbeatInterval|i", "HeartbeatInterval"])
    assert [(e["key"], e["value"]) for e in known] == [("HeartbeatInterval", "300")]
    assert unknown == ["HeartbeatInterval|i"]


@pytest.mark.parametrize("key,text", [
    ("HeartbeatInterval", "0"),      # the firmware's own rule: a heartbeat at least every 1 s
    ("HeartbeatInterval", "-5"),
    ("HeartbeatInterval", "often"),
    ("LocalPreAuthorize", "1"),
    ("MeterValuesSampledData", "Frequency"),
    ("AuthorizationKey", "0123456789abcde"),     # 15 characters: below 16
    ("AuthorizationKey", "x" * 41),             # above 40
])
def test_a_value_that_does_not_fit_is_rejected_and_nothing_changes(cfg, fake_flash, key, text):
    before = cfg.get(key)
    assert ocpp_core.change(cfg, key, text) == "Rejected"
    assert cfg.get(key) == before and fake_flash.writes == 0


def test_the_authorization_key_needs_a_reboot_and_is_never_shown(cfg):
    assert ocpp_core.change(cfg, "AuthorizationKey", "0123456789abcdef") == "RebootRequired"
    assert ocpp_core.change(cfg, "AuthorizationKey", "k" * 40) == "RebootRequired"
    assert cfg.get("AuthorizationKey") == "k" * 40
    known, unknown = ocpp_core.entries(cfg, ["AuthorizationKey", "HeartbeatInterval"])
    assert [e["key"] for e in known] == ["HeartbeatInterval"]
    assert unknown == ["AuthorizationKey"]


def test_get_configuration_of_all_keys_lists_each_readable_key_once_sorted(cfg):
    cfg.values["LocalPreAuthorize"] = True
    known, unknown = ocpp_core.entries(cfg, None, max_keys=1000)
    names = [e["key"] for e in known]
    table = [line.split("|")[0] for line in ocpp_config.TABLE.split("\n") if line]
    assert names == sorted(set(table) - {"AuthorizationKey"})
    assert unknown == []
    by_key = {e["key"]: e for e in known}
    assert by_key["HeartbeatInterval"] == {"key": "HeartbeatInterval", "readonly": False,
                                           "value": "300"}
    assert by_key["NumberOfConnectors"] == {"key": "NumberOfConnectors", "readonly": True,
                                            "value": "1"}
    assert by_key["LocalPreAuthorize"]["value"] == "true"
    assert by_key["AllowOfflineTxForUnknownId"]["value"] == "false"


def test_get_configuration_names_the_unknown_keys_and_stops_at_its_maximum(cfg):
    known, unknown = ocpp_core.entries(cfg, ["HeartbeatInterval", "Nope", "ResetRetries"])
    assert [(e["key"], e["value"]) for e in known] == [("HeartbeatInterval", "300"),
                                                       ("ResetRetries", "1")]
    assert unknown == ["Nope"]
    known, _ = ocpp_core.entries(cfg, None, max_keys=3)
    assert len(known) == 3


def test_values_are_shown_as_ocpp_text():
    assert ocpp_core.text_of(True) == "true"
    assert ocpp_core.text_of(False) == "false"
    assert ocpp_core.text_of(0) == "0"
    assert ocpp_core.text_of("Voltage") == "Voltage"
