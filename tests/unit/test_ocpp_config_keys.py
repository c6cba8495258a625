"""firmware/lib/ocpp_config.py: the OCPP 1.6 configuration key table (`row`), the typed
defaults `Config.get` reads from it, the values saved on flash and preset by the board
config's ocpp section, and their precedence (saved > preset > default)."""

from __future__ import annotations

import pytest

from tests.unit.fwimport import load

pytestmark = pytest.mark.unit

ocpp_config = load("ocpp_config")

# The Core profile's required keys (OCPP 1.6 section 9.1, "required" in the table).
CORE_REQUIRED = [
    "AuthorizeRemoteTxRequests", "ClockAlignedDataInterval", "ConnectionTimeOut",
    "ConnectorPhaseRotation", "GetConfigurationMaxKeys", "HeartbeatInterval",
    "LocalAuthorizeOffline", "LocalPreAuthorize", "MeterValuesAlignedData",
    "MeterValuesSampledData", "MeterValueSampleInterval", "NumberOfConnectors",
    "ResetRetries", "StopTransactionOnEVSideDisconnect", "StopTransactionOnInvalidId",
    "StopTxnAlignedData", "StopTxnSampledData", "SupportedFeatureProfiles",
    "TransactionMessageAttempts", "TransactionMessageRetryInterval",
    "UnlockConnectorOnEVSideDisconnect",
]


def lines():
    return [line for line in ocpp_config.TABLE.split("\n") if line]


def test_every_table_line_has_a_name_a_kind_known_flags_and_a_default_of_its_kind():
    names = []
    for line in lines():
        name, kind, flags, default = line.split("|")
        names.append(name)
        assert kind in "ibsm" and len(kind) == 1, line
        assert set(flags) <= set("rRw"), line
        if kind == "i":
            assert int(default) >= 0, line
        if kind == "b":
            assert default in ("0", "1"), line
    assert len(names) == len(set(names)), "a key is listed twice"


@pytest.mark.parametrize("key", CORE_REQUIRED)
def test_every_key_the_core_profile_requires_is_there(key):
    assert ocpp_config.row(key) is not None


def test_row_splits_the_keys_line():
    assert ocpp_config.row("HeartbeatInterval") == ["HeartbeatInterval", "i", "", "300"]
    assert ocpp_config.row("NumberOfConnectors") == ["NumberOfConnectors", "i", "r", "1"]
    assert ocpp_config.row("AuthorizationKey") == ["AuthorizationKey", "s", "wR", ""]
    assert ocpp_config.row("StopTxnAlignedData") == ["StopTxnAlignedData", "m", "", ""]
    # the first and the last line of the table
    assert ocpp_config.row("AllowOfflineTxForUnknownId") == ["AllowOfflineTxForUnknownId", "b", "", "0"]
    assert ocpp_config.row("ReconnectMaxInterval") == ["ReconnectMaxInterval", "i", "", "60"]


@pytest.mark.parametrize("key", [
    "", "Heartbeat", "heartbeatinterval", "HeartbeatInterva", "eartbeatInterval",
    "HeartbeatInterval\n", "\nHeartbeatInterval", "i", "|", "HeartbeatInterval ",
    "HeartbeatInterval|i||300", "NoSuchKey",
])
def test_anything_but_a_whole_key_name_has_no_row(key):
    assert ocpp_config.row(key) is None


# A regression: row() refused a key with a newline but not one with the table's field
# separator, so "HeartbeatInterval|i" found HeartbeatInterval's line: a ChangeConfiguration
# of it was Accepted and saved under that name, GetConfiguration showed it.
@pytest.mark.parametrize("key", [
    "HeartbeatInterval|i", "HeartbeatInterval|i|", "LocalPreAuthorize|b",
    "HeartbeatInterval|", "HeartbeatInterval||", "ReconnectMaxInterval|i||60",
    # two lines of the table at once: the search finds them, the name is not the key
    "AllowOfflineTxForUnknownId|b||0\nAuthorizationCacheEnabled",
    "|b||0\nAuthorizationCacheEnabled", "\nAuthorizationCacheEnabled",
])
def test_a_key_with_the_tables_separators_has_no_row(key):
    assert ocpp_config.row(key) is None


def test_a_key_with_a_separator_is_no_preset_nor_a_saved_value(fake_flash):
    fake_flash.write_json("ocpp/config.json", {"HeartbeatInterval|i": 5, "ResetRetries": 2})
    cfg = ocpp_config.Config(fake_flash, {"keys": {"LocalPreAuthorize|b": True}})
    assert cfg.values == {"ResetRetries": 2}
    assert cfg.get("HeartbeatInterval") == 300 and cfg.get("LocalPreAuthorize") is False
    with pytest.raises(KeyError):
        cfg.get("HeartbeatInterval|i")


def test_defaults_come_typed_from_the_table(fake_flash):
    cfg = ocpp_config.Config(fake_flash, None)
    assert cfg.get("HeartbeatInterval") == 300
    assert cfg.get("TransactionMessageAttempts") == 3
    assert cfg.get("AuthorizeRemoteTxRequests") is True
    assert cfg.get("LocalPreAuthorize") is False
    assert cfg.get("ConnectorPhaseRotation") == "0.RST,1.RST"
    assert cfg.get("MeterValuesSampledData") == "Energy.Active.Import.Register,Power.Active.Import"
    assert cfg.get("AuthorizationKey") == ""
    with pytest.raises(KeyError):
        cfg.get("NoSuchKey")


def test_list_splits_a_comma_separated_value_and_drops_empty_items(fake_flash):
    cfg = ocpp_config.Config(fake_flash, None)
    assert cfg.list("MeterValuesSampledData") == ["Energy.Active.Import.Register",
                                                  "Power.Active.Import"]
    assert cfg.list("StopTxnAlignedData") == []
    cfg.values["MeterValuesAlignedData"] = " Voltage ,, Current.Import,"
    assert cfg.list("MeterValuesAlignedData") == ["Voltage", "Current.Import"]


def test_saved_values_win_over_the_board_configs_presets_which_win_over_defaults(fake_flash):
    fake_flash.write_json("ocpp/config.json", {"HeartbeatInterval": 60, "NoSuchKey": 1})
    cfg = ocpp_config.Config(fake_flash, {"keys": {"HeartbeatInterval": 900,
                                                   "MeterValueSampleInterval": 15,
                                                   "Bogus": "x"}})
    assert cfg.get("HeartbeatInterval") == 60          # saved (ChangeConfiguration)
    assert cfg.get("MeterValueSampleInterval") == 15   # preset in config.json
    assert cfg.get("ConnectionTimeOut") == 60          # default
    assert cfg.values == {"HeartbeatInterval": 60, "MeterValueSampleInterval": 15}


def test_the_ocpp_password_presets_the_authorization_key_unless_one_is_saved(fake_flash):
    cfg = ocpp_config.Config(fake_flash, {"password": "0123456789abcdef"})
    assert cfg.get("AuthorizationKey") == "0123456789abcdef"
    fake_flash.write_json("ocpp/config.json", {"AuthorizationKey": "saved-key-0123456"})
    cfg = ocpp_config.Config(fake_flash, {"password": "0123456789abcdef"})
    assert cfg.get("AuthorizationKey") == "saved-key-0123456"


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"HeartbeatInterval": 60'])
def test_an_unreadable_saved_file_leaves_the_defaults(fake_flash, content):
    fake_flash.files["ocpp/config.json"] = content
    assert ocpp_config.Config(fake_flash, {}).get("HeartbeatInterval") == 300


def test_save_writes_the_changed_values_and_survives_a_reboot(fake_flash):
    cfg = ocpp_config.Config(fake_flash, {})
    cfg.values["HeartbeatInterval"] = 120
    cfg.values["LocalPreAuthorize"] = True
    cfg.save()
    assert "ocpp" in fake_flash.dirs
    assert fake_flash.json("ocpp/config.json") == {"HeartbeatInterval": 120,
                                                   "LocalPreAuthorize": True}
    again = ocpp_config.Config(fake_flash, {})
    assert (again.get("HeartbeatInterval"), again.get("LocalPreAuthorize")) == (120, True)


def test_a_save_on_a_full_flash_is_logged_not_raised(fake_flash):
    logged = []
    cfg = ocpp_config.Config(fake_flash, {}, log=logged.append)
    fake_flash.fail_writes = OSError(28, "no space")
    cfg.values["HeartbeatInterval"] = 120
    cfg.save()
    assert cfg.get("HeartbeatInterval") == 120  # kept in RAM
    assert logged and logged[0].startswith("ocpp: cannot save configuration")
