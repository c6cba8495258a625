"""The first firmware scenario, on both runtimes: boot on the stand-ins, join Wi-Fi, read
the sensors and report them on the console."""

import pytest
from harness import sensor_reports

CONFIG = {
    "cp_id": "PICO-0042",
    "wifi": {"ssid": "workshop", "password": "secret"},
    "intervals": {"sensors_s": 1, "report_s": 1},
}


@pytest.mark.dual_runtime
def test_board_joins_wifi_and_reports_its_sensors(board_factory, runtime_name, record_heap):
    board = board_factory(CONFIG, world={"ambient_c": 31.0, "humidity": 62.0, "mcu_c": 41.0,
                                         "ap_ssid": "workshop", "ap_password": "secret"})
    board.wait_for(r"^PicoCharge PICO-0042 booting \(local mode\)$")
    board.wait_for(r"^wifi: up 192\.168\.4\.23 rssi -58$")
    board.wait_for(r"^sensors .*\n(.*\n)*sensors .*\n(.*\n)*sensors ", timeout=30)
    reports = sensor_reports(board.console.text)
    assert len(reports) >= 3
    readings = [r for r in reports if "t" in r]
    assert readings, reports
    # DHT11: integer degrees and percent, within the simulated noise of the set values
    assert all(30 <= r["t"] <= 32 and 60 <= r["rh"] <= 64 for r in readings), readings
    assert all(abs(r["tmcu"] - 41.0) <= 1.0 for r in reports), reports
    if runtime_name == "micropython":
        assert all("heap" in r for r in reports)
        record_heap(min(r["heap"] for r in reports))


@pytest.mark.dual_runtime
def test_wrong_wifi_password_is_reported_with_its_status_code(board_factory):
    board = board_factory(CONFIG, world={"ap_ssid": "workshop", "ap_password": "other"})
    board.wait_for(r"^wifi: not connected \(status -3: wrong password\)$")
    board.wait_for(r"^sensors ")  # the board keeps working offline


@pytest.mark.dual_runtime
def test_malformed_config_is_reported_and_the_board_keeps_running(board_factory, tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "config.json").write_text('{"cp_id": "PICO-1", "wifi": ')
    board = board_factory(None, flash=flash)
    board.wait_for(r"^config: config\.json is not valid JSON .*running with defaults")
    board.wait_for(r"^wifi: no wifi section in config\.json, staying offline$")
    board.wait_for(r"^ready: ")
    board.control("console", line="import ev; ev.status()")  # the REPL stays usable
    board.wait_for(r"^station  PICO-0001  status Available$")


@pytest.mark.dual_runtime
def test_broken_dht11_is_left_out_of_the_report_and_healing_brings_it_back(board_factory):
    board = board_factory(CONFIG, world={"dht_fault": "timeout"})
    board.wait_for(r'^sensors \{.*"dht_error": "timeout \((110|\[Errno 110\] ETIMEDOUT)\)"')
    mark = board.console.mark()
    board.control("sensor", name="dht", fault=None)
    board.wait_for(r'^sensors \{[^}]*"t": ', start=mark, timeout=15)
