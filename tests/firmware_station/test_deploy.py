"""The deploy flow around mpremote, checked without a board (--dry-run): what `make
deploy` would run, and that a broken local config never reaches a board."""

import json
import subprocess
import sys

from tools.board import ROOT

WIFI = {"ssid": "workshop", "password": "secret"}  # an uplink without Wi-Fi is refused too


def deploy(*args):
    return subprocess.run([sys.executable, "-m", "tools.deploy", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


# Only this test builds into the default build/firmware/ (the other tests build into their
# own directories: parallel workers would empty each other's build).
def test_flash_builds_copies_changed_files_writes_config_and_resets_offline(tmp_path):
    cfg = tmp_path / "config.local.json"
    cfg.write_text((ROOT / "config.example.json").read_text())
    out = deploy("flash", "--port", "/dev/ttyACM9", "--config", str(cfg), "--dry-run")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "connect /dev/ttyACM9" in text
    assert "fs cp -r " + str(ROOT / "build" / "firmware" / "lib") + " :" in text
    assert " --force" not in text and " -f " not in text  # unchanged files are skipped
    # everything comes from the repository: no `mip install` (it needs the internet)
    assert " mip " not in text and "umqtt" not in text
    assert f"fs cp {cfg} :config.json.tmp" in text
    assert "os.rename('config.json.tmp', 'config.json')" in text
    assert text.rstrip().endswith("+ reset")
    assert "change-me" not in text and "CHANGE-ME" not in text  # secrets are not printed
    built = sorted(p.name for p in (ROOT / "build" / "firmware" / "lib").iterdir())
    assert "station.mpy" in built and not any(n.endswith(".py") for n in built)


def test_flash_refuses_a_config_the_firmware_would_reject(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cp_id": "PICO-1", "mqtt": {"url": "http://broker"}}))
    out = deploy("flash", "--port", "/dev/ttyACM9", "--build-dir", str(tmp_path / "fw"), "--config", str(bad), "--dry-run")
    assert out.returncode != 0
    assert "mqtt.url must start with mqtt:// or mqtts://" in out.stderr
    truncated = tmp_path / "cut.json"
    truncated.write_text('{"cp_id": "PICO-1", "wifi": ')
    out = deploy("flash", "--port", "/dev/ttyACM9", "--build-dir", str(tmp_path / "fw"), "--config", str(truncated), "--dry-run")
    assert out.returncode != 0 and "not valid JSON" in out.stderr


def test_flash_refuses_mqtts_without_a_ca_and_malformed_mqtt_keys(tmp_path):
    cfg = tmp_path / "tls.json"
    cfg.write_text(json.dumps({"cp_id": "PICO-1", "wifi": WIFI, "mqtt": {"url": "mqtts://broker.lan"}}))
    out = deploy("flash", "--port", "/dev/ttyACM9", "--build-dir", str(tmp_path / "fw"), "--config", str(cfg), "--dry-run")
    assert out.returncode != 0
    assert "mqtt.url is mqtts:// without mqtt.ca_file" in out.stderr
    cfg.write_text(json.dumps({"cp_id": "PICO-1", "wifi": WIFI, "mqtt": {"url": "mqtts://broker.lan",
                                                           "insecure": True}}))
    out = deploy("flash", "--port", "/dev/ttyACM9", "--build-dir", str(tmp_path / "fw"), "--config", str(cfg), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "warning: mqtt: TLS WITHOUT a certificate check" in out.stderr
    cfg.write_text(json.dumps({"cp_id": "PICO-1", "wifi": WIFI, "mqtt": {"url": "mqtts://broker.lan",
                                                           "ca_file": "ca.der",
                                                           "insecure": "yes"}}))
    out = deploy("flash", "--port", "/dev/ttyACM9", "--build-dir", str(tmp_path / "fw"), "--config", str(cfg), "--dry-run")
    assert out.returncode != 0 and "mqtt.insecure must be true or false" in out.stderr
    cfg.write_text(json.dumps({"cp_id": "PICO-1", "wifi": WIFI, "mqtt": {"url": "mqtt://broker.lan:18x3"}}))
    out = deploy("flash", "--port", "/dev/ttyACM9", "--build-dir", str(tmp_path / "fw"), "--config", str(cfg), "--dry-run")
    assert out.returncode != 0 and "mqtt.url needs a host and a port" in out.stderr
    cfg.write_text(json.dumps({"cp_id": "PICO-1", "wifi": WIFI, "thingspeak": {
        "channel": 1, "write_key": "K", "mqtt": {"url": "http://mqtt3.thingspeak.com"}}}))
    out = deploy("flash", "--port", "/dev/ttyACM9", "--build-dir", str(tmp_path / "fw"), "--config", str(cfg), "--dry-run")
    assert out.returncode != 0
    assert "thingspeak.mqtt.url must start with mqtt:// or mqtts://" in out.stderr
