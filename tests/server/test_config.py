"""Configuration precedence: defaults < TOML file < PICOCHARGE_* environment < flags."""

from __future__ import annotations

import pytest

from server.__main__ import parse_args
from server.config import load_config

pytestmark = pytest.mark.unit  # pure: starts no process, board, broker or server


def test_toml_environment_and_overrides_layer_in_order(tmp_path):
    toml = tmp_path / "picocharge.toml"
    toml.write_text('[ocpp]\nport = 9100\nheartbeat_interval = 120\n'
                    '[mqtt]\nurl = "mqtt://broker.lan:1883"\n[thingspeak]\nrate_limit = false\n')
    config = load_config(toml, environ={"PICOCHARGE_OCPP_PORT": "9200",
                                        "PICOCHARGE_OCPP_DATA_TRANSFER_VENDORS": "A, B"},
                         overrides={"http.port": 0})
    assert config.ocpp["port"] == 9200               # environment beats the file
    assert config.ocpp["heartbeat_interval"] == 120  # file beats the default
    assert config.ocpp["data_transfer_vendors"] == ["A", "B"]
    assert config.mqtt["url"] == "mqtt://broker.lan:1883"
    assert config.thingspeak["rate_limit"] is False
    assert config.http["port"] == 0
    assert config.ocpp["max_message_bytes"] == 65536  # untouched default


def test_unknown_keys_are_refused(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text("[ocpp]\nprot = 1\n")
    with pytest.raises(KeyError):
        load_config(toml, environ={})


def test_flags_parse_into_overrides():
    args = parse_args(["--ocpp-port", "0", "--http-port", "0", "--mqtt-url", "mqtt://h:1",
                       "--unknown", "Pending", "--set", "ocpp.rate_limit_burst=10"])
    assert (args.ocpp_port, args.http_port, args.mqtt_url, args.unknown) == (0, 0, "mqtt://h:1",
                                                                           "Pending")
    assert args.set == ["ocpp.rate_limit_burst=10"]
