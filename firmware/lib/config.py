"""The board's configuration: `/config.json` merged over documented defaults.

`load(flash)` never raises: a missing file gives the defaults (every uplink off), a
malformed one gives the defaults plus an error message for the console, so the board stays
reachable at the REPL. A missing section (wifi, ocpp, mqtt, thingspeak) switches that
uplink off.
"""

DEFAULTS = {
    "cp_id": "PICO-0001",
    # GPIO numbers on the Pico W (docs/hardware.md); "LED" is the CYW43's LED pin.
    "pins": {
        "relay": 18,
        "pilot_pwm": 16,
        "pilot_adc": 26,
        "current_adc": 27,
        "voltage_adc": 28,
        "dht": 15,
        "safe_mode": 22,
        "led": "LED",
    },
    # Analogue front ends (docs/hardware.md): volts at the ADC -> physical units.
    "calibration": {
        "pilot_bias_v": 1.65,
        "pilot_v_per_adc_v": 8.0,
        "meter_bias_v": 1.65,
        "amps_per_adc_v": 30.0,
        "volts_per_adc_v": 250.0,
        "mains_hz": 50,
        "mcu_temp_offset_c": 0.0,
        "dht_offset_c": 0.0,
    },
    "limits": {
        "max_current_a": 32.0,
        "over_current_margin_a": 2.0,
        "over_temp_c": 60.0,
        "mcu_over_temp_c": 80.0,
    },
    "intervals": {
        "sensors_s": 5,
        "telemetry_s": 60,
    },
    "wifi": None,
    "ocpp": None,
    "mqtt": None,
    "thingspeak": None,
}

UPLINKS = ("wifi", "ocpp", "mqtt", "thingspeak")
# Sections with no default here, read by their own modules when present: firmware
# (firmware_trust), app (app.app_options), station (station.options), local (local_point).
# The board ignores any other top-level key; `make deploy` refuses one (a misspelt
# section would switch its uplink off without a word).
OTHER_SECTIONS = ("firmware", "app", "station", "local")


class ConfigError(Exception):
    pass


def merge(defaults, overrides):
    """Recursive dict merge; `overrides` wins; neither argument is modified."""
    out = {}
    for key in defaults:
        out[key] = defaults[key]
    for key in overrides:
        base = out.get(key)
        value = overrides[key]
        if isinstance(base, dict) and isinstance(value, dict):
            out[key] = merge(base, value)
        else:
            out[key] = value
    return out


def _check_mqtt(section, name):
    """An MQTT link's keys (mqtt_link.Link): url, user, password, ca_file, insecure."""
    url = str(section.get("url", ""))
    if not url.startswith(("mqtt://", "mqtts://")):
        raise ConfigError("%s.url must start with mqtt:// or mqtts://" % name)
    host = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    port = host.rsplit("]", 1)[-1] if host.startswith("[") else host
    port = port.rsplit(":", 1)[1] if ":" in port else "1883"
    if not host or host.startswith(":") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("%s.url needs a host and a port of 1..65535" % name)
    for key in ("user", "password", "ca_file", "client_id"):
        if section.get(key) is not None and not isinstance(section[key], str):
            raise ConfigError("%s.%s must be a string" % (name, key))
    if not isinstance(section.get("insecure", False), bool):
        raise ConfigError("%s.insecure must be true or false" % name)
    for key in ("timeout_s", "max_backoff_s"):
        value = section.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError("%s.%s must be a positive number" % (name, key))


def validate(cfg):
    """Raise ConfigError with a readable message for a config the board cannot use."""
    if not isinstance(cfg.get("cp_id"), str) or not cfg["cp_id"]:
        raise ConfigError("cp_id must be a non-empty string")
    if len(cfg["cp_id"]) > 48:
        raise ConfigError("cp_id is longer than 48 characters: shorten it")
    for name in UPLINKS:
        section = cfg.get(name)
        if section is not None and not isinstance(section, dict):
            raise ConfigError("%s must be an object or absent" % name)
    if cfg["wifi"] is not None and not cfg["wifi"].get("ssid"):
        raise ConfigError("wifi.ssid is missing: name the network to join")
    if cfg["ocpp"] is not None and not str(cfg["ocpp"].get("url", "")).startswith(("ws://", "wss://")):
        raise ConfigError("ocpp.url must start with ws:// or wss://")
    mqtt = cfg["mqtt"]
    if mqtt is not None:
        # "via": "ocpp" carries telemetry inside the OCPP session (telemetry_ocpp.py)
        if mqtt.get("via", "broker") not in ("broker", "ocpp"):
            raise ConfigError('mqtt.via must be "broker" or "ocpp"')
        if mqtt.get("via") == "ocpp":
            if cfg["ocpp"] is None:
                raise ConfigError('mqtt.via "ocpp" needs an ocpp section')
        else:
            _check_mqtt(mqtt, "mqtt")
    ts = cfg["thingspeak"]
    if ts is not None:
        if ts.get("ca_file") is not None and not isinstance(ts["ca_file"], str):
            raise ConfigError("thingspeak.ca_file must be a file name on flash")
        if not isinstance(ts.get("insecure", False), bool):
            raise ConfigError("thingspeak.insecure must be true or false")
    if ts is not None and ts.get("mqtt") is not None:
        if not isinstance(ts["mqtt"], dict):
            raise ConfigError("thingspeak.mqtt must be an object or absent")
        _check_mqtt(ts["mqtt"], "thingspeak.mqtt")
    for key in ("pins", "calibration", "limits", "intervals"):
        if not isinstance(cfg.get(key), dict):
            raise ConfigError("%s must be an object" % key)
    fw = cfg.get("firmware")  # signed updates (firmware_trust.py)
    if fw is not None:
        if not isinstance(fw, dict):
            raise ConfigError("firmware must be an object or absent")
        if not isinstance(fw.get("keys", []), list):
            raise ConfigError("firmware.keys must be a list of Ed25519 public keys (hex or base64)")
        if not isinstance(fw.get("allow_unsigned", False), bool):
            raise ConfigError("firmware.allow_unsigned must be true or false")
    return cfg


def load(flash, name="config.json"):
    """(config, error): the merged config and None, or the defaults and a message."""
    try:
        raw = flash.read_json(name)
    except OSError:
        return merge(DEFAULTS, {}), None
    except ValueError as exc:
        return merge(DEFAULTS, {}), "config.json is not valid JSON (%s); running with defaults, uplinks off" % exc
    if not isinstance(raw, dict):
        return merge(DEFAULTS, {}), "config.json must hold a JSON object; running with defaults"
    try:
        return validate(merge(DEFAULTS, raw)), None
    except ConfigError as exc:
        return merge(DEFAULTS, {}), "config.json: %s; running with defaults, uplinks off" % exc
