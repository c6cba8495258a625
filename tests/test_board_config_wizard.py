"""`make config` (tools/board_config.py): the config it writes passes the board's own
checks, the station it registers is admitted on OCPP and MQTT with that config at its
first connection, it asks only what it was not told, and it never replaces a file
without a yes."""

from __future__ import annotations

import json
import stat
import urllib.request

import pytest

from server.app import Application
from server.config import load_config
from tests.waiting import wait_until
from tools import board_config
from tools.deploy import config_problems

TOKEN = "wizard-test-token-0123456789abcdef"


@pytest.fixture
def central(tmp_path):
    config = load_config(None, environ={}, overrides={
        "server.data_dir": str(tmp_path / "var"), "ocpp.host": "127.0.0.1", "ocpp.port": 0,
        "http.host": "127.0.0.1", "http.port": 0, "mqtt.embedded_port": 0,
        "auth.admin_token": TOKEN})
    app = Application(config).start()
    yield app
    app.stop()


def station(app, cp_id):
    request = urllib.request.Request(
        f"http://127.0.0.1:{app.ports['http']}/api/v1/chargepoints/{cp_id}",
        headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.mark.parametrize("runtime", ["cpython"])
def test_the_written_config_is_admitted_on_ocpp_and_mqtt_at_the_first_connection(
        central, tmp_path, board_factory, capsys):
    path = tmp_path / "config.local.json"
    code = board_config.main([
        "--config", str(path), "--yes", "--cp-id", "PICO-WIZ", "--ssid", "workshop",
        "--wifi-password", "wifi-secret", "--server", "127.0.0.1",
        "--ocpp-port", str(central.ports["ocpp"]), "--mqtt-port", str(central.ports["mqtt"]),
        "--api", f"http://127.0.0.1:{central.ports['http']}", "--token", TOKEN])
    assert code == 0
    assert "PICO-WIZ registered" in capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = json.loads(path.read_text())
    assert config_problems(config) == ([], [])
    assert len(config["ocpp"]["password"]) == 32
    board_factory(config)

    def online():
        record = station(central, "PICO-WIZ")
        return record["ocpp"]["online"] and record["telemetry"]["online"]

    wait_until(online, 60, "the board online on OCPP and MQTT")
    assert central.broker.credentials.is_enabled("PICO-WIZ")


def test_it_asks_only_what_it_was_not_told_and_says_when_it_did_not_register(
        tmp_path, monkeypatch, capsys):
    answers = iter(["PICO-ASK", "garage", "192.168.1.20"])
    asked = []

    def fake_input(prompt):
        asked.append(prompt)
        return next(answers)

    monkeypatch.setattr("builtins.input", fake_input)
    monkeypatch.setattr(board_config.getpass, "getpass", lambda prompt: "garage-wifi-pw")
    monkeypatch.delenv("PICOCHARGE_ADMIN_TOKEN", raising=False)
    path = tmp_path / "config.local.json"
    assert board_config.main(["--config", str(path), "--token", ""]) == 0
    assert [prompt.split(" [")[0].rstrip(": ") for prompt in asked] == [
        "Station id (its chargePointId)", "Wi-Fi network (SSID)",
        "The central system's address on your network"]
    config = json.loads(path.read_text())
    assert config["cp_id"] == "PICO-ASK" and config["wifi"] == {"ssid": "garage",
                                                                "password": "garage-wifi-pw"}
    assert config["ocpp"]["url"] == "ws://192.168.1.20:9000/ocpp"
    assert "not registered" in capsys.readouterr().out


def test_an_existing_config_is_replaced_only_after_a_yes(tmp_path, monkeypatch):
    path = tmp_path / "config.local.json"
    path.write_text('{"cp_id": "KEEP-ME"}')
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert board_config.main(["--config", str(path), "--cp-id", "X", "--ssid", "s",
                              "--wifi-password", "p", "--server", "10.0.0.2"]) == 1
    assert json.loads(path.read_text()) == {"cp_id": "KEEP-ME"}


def test_a_config_the_board_would_refuse_is_not_written(tmp_path):
    path = tmp_path / "config.local.json"
    code = board_config.main(["--config", str(path), "--yes", "--cp-id", "X" * 60,
                              "--ssid", "s", "--wifi-password", "p", "--server", "10.0.0.2"])
    assert code == 1 and not path.exists()
