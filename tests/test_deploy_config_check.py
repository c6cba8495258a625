"""`make deploy`'s config check (tools/deploy.py `config_problems`) refuses exactly what the
board would refuse or ignore: one case per rule, each shown twice, by the check (a message
naming the key, what the board would do, and the fix) and by the board's own code on the
MicroPython Unix port (the firmware refuses, ignores or misreads the same value). The
example config passes both."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest
from harness import run_script

from tools import deploy
from tools.board import ROOT

BASE = {"cp_id": "PICO-1", "wifi": {"ssid": "workshop", "password": "secret"}}
WSS = {"url": "wss://cs.lan/ocpp", "ca_file": "ca.der"}

# What each board probe prints: the board refuses the value (an error, a refusal to
# connect), ignores it (runs as if it were not there), or misreads it (a wrong type).
PRELUDE = """
import json
import config
RAW = json.loads(%r)
CFG = config.merge(config.DEFAULTS, RAW)
PLAIN = config.merge(config.DEFAULTS, {})
class Flash:
    def read_json(self, name):
        if name == "config.json":
            return RAW
        raise OSError(2)
"""
LOAD = "cfg, err = config.load(Flash())\nprint('refused' if err else 'used')"
TLS = ("import uplink\ntry:\n    uplink.tls_context(%s)\n    print('used')\n"
       "except uplink.HTTPError:\n    print('refused')")
MQTT_TLS = ("import mqtt_connect\nclass Link:\n    secure = True\n    ca_file = %s.get('ca_file')\n"
            "    insecure = %s.get('insecure', False)\n    flash = None\n"
            "try:\n    mqtt_connect.tls_context(Link)\n    print('used')\n"
            "except mqtt_connect.MQTTError:\n    print('refused')")
KEYS = ("import firmware_trust\nkeys = CFG['firmware']['keys']\n"
        "print('ignored' if len(firmware_trust._keys(keys)) < len(keys) else 'used')")
OCPP_KEYS = ("import ocpp_config\ntry:\n    c = ocpp_config.Config(Flash(), CFG['ocpp'])\n"
             "except Exception:\n    print('refused')\nelse:\n"
             "    print('ignored' if not c.values else 'used')")
OCPP_VALUE = ("import ocpp_core\nclass C:\n    values = {}\n    def save(self):\n        pass\n"
              "key, value = list(CFG['ocpp']['keys'].items())[0]\n"
              "print('refused' if ocpp_core.change(C(), key, str(value)) == 'Rejected' else 'used')")
OCPP_TYPE = ("import ocpp_config\nc = ocpp_config.Config(Flash(), CFG['ocpp'])\n"
             "print('misread' if not isinstance(c.get('HeartbeatInterval'), int) else 'used')")
TS_INTERVAL = ("from thingspeak import ThingSpeak\ntry:\n"
               "    t = ThingSpeak(CFG, None, None, None)\nexcept TypeError:\n    print('refused')\n"
               "else:\n    print('ignored' if t.interval_s != CFG['thingspeak']['interval_s'] else 'used')")
HEAP = ("from app import App\n"
        "print('refused' if App._https_next_to_wss(App, CFG) else 'used')")
SECTION = {
    "app": "import app\nprint('ignored' if app.app_options(CFG) == app.app_options(PLAIN) else 'used')",
    "station": ("import station\n"
                "print('ignored' if station.options(CFG) == station.options(PLAIN) else 'used')"),
    "local": ("from local_point import LocalPoint\n"
              "print('ignored' if LocalPoint(CFG, None, None, None).free_vend == "
              "LocalPoint(PLAIN, None, None, None).free_vend else 'used')"),
}


def case(rule, overrides, says, fix, probe, verdict="refused"):
    raw = dict(BASE)
    raw.update(overrides)
    raw = {k: v for k, v in raw.items() if v is not None}  # None: leave the section out
    return pytest.param(raw, says, fix, probe, verdict, id=rule)


# The board's validation (firmware/lib/config.py validate: the board refuses the whole file)
VALIDATE = [
    case("cp_id-empty", {"cp_id": ""}, "cp_id must be a non-empty string", "must be", LOAD),
    case("cp_id-too-long", {"cp_id": "P" * 49}, "cp_id is longer than 48 characters: shorten it", "shorten", LOAD),
    case("uplink-not-an-object", {"ocpp": "ws://cs.lan/ocpp"}, "ocpp must be an object or absent",
         "must be", LOAD),
    case("wifi-ssid-missing", {"wifi": {"password": "x"}}, "wifi.ssid is missing: name the network to join", "name the network",
         LOAD),
    case("ocpp-url-scheme", {"ocpp": {"url": "http://cs.lan/ocpp"}},
         "ocpp.url must start with ws:// or wss://", "must start", LOAD),
    case("mqtt-via", {"mqtt": {"via": "radio"}}, 'mqtt.via must be "broker" or "ocpp"', "must be", LOAD),
    case("mqtt-via-ocpp-without-ocpp", {"mqtt": {"via": "ocpp"}},
         'mqtt.via "ocpp" needs an ocpp section', "needs", LOAD),
    case("mqtt-url-scheme", {"mqtt": {"url": "http://broker.lan"}},
         "mqtt.url must start with mqtt:// or mqtts://", "must start", LOAD),
    case("mqtt-url-port", {"mqtt": {"url": "mqtt://broker.lan:70000"}},
         "mqtt.url needs a host and a port of 1..65535", "needs", LOAD),
    case("mqtt-user-not-a-string", {"mqtt": {"url": "mqtt://broker.lan", "user": 7}},
         "mqtt.user must be a string", "must be", LOAD),
    case("mqtt-insecure-not-a-boolean", {"mqtt": {"url": "mqtt://broker.lan", "insecure": "yes"}},
         "mqtt.insecure must be true or false", "must be", LOAD),
    case("mqtt-timeout-not-positive", {"mqtt": {"url": "mqtt://broker.lan", "timeout_s": 0}},
         "mqtt.timeout_s must be a positive number", "must be", LOAD),
    case("thingspeak-ca_file-not-a-name", {"thingspeak": {"ca_file": 1}},
         "thingspeak.ca_file must be a file name on flash", "must be", LOAD),
    case("thingspeak-insecure-not-a-boolean", {"thingspeak": {"insecure": 1}},
         "thingspeak.insecure must be true or false", "must be", LOAD),
    case("thingspeak-mqtt-not-an-object", {"thingspeak": {"ca_file": "ts.der", "mqtt": "x"}},
         "thingspeak.mqtt must be an object or absent", "must be", LOAD),
    case("thingspeak-mqtt-url-scheme",
         {"thingspeak": {"ca_file": "ts.der", "mqtt": {"url": "http://mqtt3.thingspeak.com"}}},
         "thingspeak.mqtt.url must start with mqtt:// or mqtts://", "must start", LOAD),
    case("pins-not-an-object", {"pins": [18, 16]}, "pins must be an object", "must be", LOAD),
    case("firmware-not-an-object", {"firmware": ["KEY"]}, "firmware must be an object or absent",
         "must be", LOAD),
    case("firmware-keys-not-a-list", {"firmware": {"keys": "KEY"}},
         "firmware.keys must be a list of Ed25519 public keys (hex or base64)", "must be", LOAD),
    case("firmware-allow_unsigned-not-a-boolean", {"firmware": {"allow_unsigned": "no"}},
         "firmware.allow_unsigned must be true or false", "must be", LOAD),
]

# What the board refuses or ignores at run time (the check runs the firmware's own functions)
RUN_TIME = [
    case("unknown-section", {"thingspeek": {"channel": 1}},
         "thingspeek is not a section this firmware reads", "check the spelling", None, "ignored"),
    *[case(f"{name}-not-an-object", {name: [1]}, f"{name} must be an object", "must be",
           SECTION[name], "ignored") for name in ("app", "station", "local")],
    case("ocpp-wss-without-ca", {"ocpp": {"url": "wss://cs.lan/ocpp"}},
         "ocpp.url is wss:// without ocpp.ca_file", "name it in ocpp.ca_file",
         TLS % "CFG['ocpp']"),
    case("mqtt-mqtts-without-ca", {"mqtt": {"url": "mqtts://broker.lan"}},
         "mqtt.url is mqtts:// without mqtt.ca_file", "name it in mqtt.ca_file",
         MQTT_TLS % ("CFG['mqtt']", "CFG['mqtt']")),
    case("thingspeak-https-without-ca", {"thingspeak": {"url": "https://api.thingspeak.com"}},
         "thingspeak.url is https:// without thingspeak.ca_file", "name it in thingspeak.ca_file",
         TLS % "{'ca_file': CFG['thingspeak'].get('ca_file')}"),
    case("thingspeak-default-url-without-ca", {"thingspeak": {"channel": 1}},
         "thingspeak.url is https:// without thingspeak.ca_file (the default, "
         "https://api.thingspeak.com)", "thingspeak.insecure to true",
         "from thingspeak import ThingSpeak\n" + TLS % "ThingSpeak(CFG, None, None, None).tls_section"),
    case("thingspeak-mqtt-mqtts-without-ca",
         {"thingspeak": {"ca_file": "ts.der", "mqtt": {"url": "mqtts://mqtt3.thingspeak.com"}}},
         "thingspeak.mqtt.url is mqtts:// without thingspeak.mqtt.ca_file",
         "name it in thingspeak.mqtt.ca_file",
         MQTT_TLS % ("CFG['thingspeak']['mqtt']", "CFG['thingspeak']['mqtt']")),
    case("https-next-to-wss-on-a-pico-w", {"ocpp": WSS, "thingspeak": {"ca_file": "ts.der"}},
         "thingspeak.url is https:// next to a wss:// ocpp.url", "remove the thingspeak section",
         HEAP),
    case("firmware-key-not-a-key", {"firmware": {"keys": ["PUBLIC-KEY-64-HEX-DIGITS"]}},
         "firmware.keys[0] is not an Ed25519 public key", "python -m tools.sign pubkey", KEYS,
         "ignored"),
    case("firmware-key-twice", {"firmware": {"keys": ["ab" * 32, "ab" * 32]}},
         "firmware.keys[1] repeats firmware.keys[0]", "remove it", KEYS, "ignored"),
    case("ocpp-keys-not-an-object", {"ocpp": {"url": "ws://cs.lan/ocpp", "keys": ["HeartbeatInterval"]}},
         "ocpp.keys must be an object", '{"HeartbeatInterval": 300}', OCPP_KEYS),
    case("ocpp-key-unknown", {"ocpp": {"url": "ws://cs.lan/ocpp", "keys": {"HeartBeatInterval": 30}}},
         "ocpp.keys.HeartBeatInterval is not an OCPP configuration key", "check the spelling",
         OCPP_KEYS, "ignored"),
    case("ocpp-key-value-rejected", {"ocpp": {"url": "ws://cs.lan/ocpp", "keys": {"HeartbeatInterval": 0}}},
         "ocpp.keys.HeartbeatInterval is 0", "a whole number that ChangeConfiguration accepts",
         OCPP_VALUE),
    case("ocpp-key-value-type", {"ocpp": {"url": "ws://cs.lan/ocpp", "keys": {"HeartbeatInterval": "300"}}},
         'ocpp.keys.HeartbeatInterval is "300"', "give a whole number", OCPP_TYPE, "misread"),
    case("thingspeak-interval-below-the-minimum", {"thingspeak": {"ca_file": "ts.der", "interval_s": 5}},
         "thingspeak.interval_s is 5 s, below thingspeak.min_interval_s (15 s",
         "set thingspeak.interval_s to 15 or more", TS_INTERVAL, "ignored"),
    case("thingspeak-interval-not-a-number", {"thingspeak": {"ca_file": "ts.der", "interval_s": "5"}},
         "thingspeak.interval_s must be a number of seconds", "must be", TS_INTERVAL),
]
RULES = VALIDATE + RUN_TIME


@pytest.mark.parametrize(("raw", "says", "fix", "probe", "verdict"), RULES)
def test_the_check_refuses_a_config_breaking_the_rule_naming_key_and_fix(raw, says, fix, probe,
                                                                         verdict):
    problems, _ = deploy.config_problems(raw)
    assert len(problems) == 1, problems
    assert says in problems[0] and fix in problems[0], problems[0]


@pytest.mark.parametrize(("raw", "says", "fix", "probe", "verdict"),
                         [r for r in RULES if r.values[3] is not None])
def test_the_board_refuses_or_ignores_the_same_config_on_micropython(raw, says, fix, probe,
                                                                     verdict):
    out = run_script("micropython", PRELUDE % json.dumps(raw) + probe)
    assert out.split()[-1] == verdict, out


def test_without_wifi_the_board_stays_offline_as_the_check_says(board_factory):
    raw = {"cp_id": "PICO-1", "ocpp": {"url": "ws://127.0.0.1:9/ocpp"}}
    problems, _ = deploy.config_problems(raw)
    assert problems == ['ocpp without a wifi section: the board joins no network and stays '
                        'offline; add "wifi": {"ssid": ..., "password": ...}']
    board = board_factory(raw)
    board.wait_for(r"^wifi: no wifi section in config\.json, staying offline$")


@pytest.fixture
def runtime():
    return "micropython-picow"


def test_every_refusal_of_the_boards_validation_has_a_case():
    """A rule added to firmware/lib/config.py without a case here fails this test."""
    tree = ast.parse((ROOT / "firmware" / "lib" / "config.py").read_text())
    messages = [node.exc.args[0] for node in ast.walk(tree)
                if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                and getattr(node.exc.func, "id", "") == "ConfigError"]
    cases = [r.values[1] for r in VALIDATE]
    for msg in messages:
        text = msg.left.value if isinstance(msg, ast.BinOp) else msg.value
        pattern = re.escape(text).replace("%s", ".+")
        assert any(re.fullmatch(pattern, c) for c in cases), f"no case for {text!r}"


def test_the_sections_the_check_knows_are_those_the_firmware_reads():
    read = set()
    for src in (ROOT / "firmware").rglob("*.py"):
        # config / cfg / self.config: the board's config, lower-case sections (the OCPP key
        # table, cp.cfg, has CamelCase keys)
        read |= set(re.findall(r'(?:(?<![.\w])(?:config|cfg)|self\.config)(?:\.get\(|\[)"([a-z]\w*)"',
                               src.read_text()))
    rules = deploy.board_rules()
    assert read == set(rules.config.DEFAULTS) | set(rules.config.OTHER_SECTIONS)


def test_the_example_config_passes_the_check_and_the_board_loads_it():
    example = (ROOT / "config.example.json").read_text()
    assert deploy.config_problems(json.loads(example)) == ([], [])
    out = run_script("micropython", PRELUDE % example + LOAD)
    assert out.split()[-1] == "used"


def test_flash_names_every_problem_and_flashes_nothing(tmp_path):
    cfg = tmp_path / "config.local.json"
    cfg.write_text(json.dumps({**BASE, "ocpp": {"url": "wss://cs.lan/ocpp"}, "thingspeek": {}}))
    out = subprocess.run([sys.executable, "-m", "tools.deploy", "flash", "--port", "/dev/ttyACM9",
                          "--build-dir", str(tmp_path / "fw"), "--config", str(cfg), "--dry-run"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "nothing was flashed" in out.stderr
    assert "ocpp.url is wss:// without ocpp.ca_file" in out.stderr
    assert "thingspeek is not a section this firmware reads" in out.stderr
    assert "mpremote" not in out.stdout and not (tmp_path / "fw").exists()


def test_the_check_leaves_no_firmware_module_in_the_host_process():
    deploy.board_rules.cache_clear()
    before = set(sys.modules)
    deploy.config_problems(dict(BASE))
    assert not {"config", "uplink", "ocpp_core", "micropython"} & (set(sys.modules) - before)
