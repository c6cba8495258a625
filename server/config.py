"""Configuration: defaults, overlaid by a TOML file, then PICOCHARGE_* environment
variables, then command-line flags. Every listening port may be 0 (ephemeral)."""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {
        "data_dir": "var",
        "log_level": "INFO",
        "public_url": "",  # base URL charge points use to reach the HTTP side
    },
    "store": {
        "backend": "sqlite",
        "path": "",  # default: <data_dir>/picocharge.db
        "batch_max": 2000,
        "retention_days_telemetry": 90,
        "retention_days_meter_values": 365,
        "retention_days_status_history": 365,
        "retention_days_events": 365,
        "retention_check_seconds": 3600,
    },
    "ocpp": {
        "host": "0.0.0.0",
        "port": 9000,
        "heartbeat_interval": 300,
        "offline_after_heartbeats": 2.5,  # silence > factor × interval → offline
        "monitor_interval": 1.0,
        "max_message_bytes": 65536,
        "rate_limit_per_second": 50.0,
        "rate_limit_burst": 100,
        "call_timeout": 30.0,
        "unknown_chargepoints": "Rejected",  # or "Pending"
        "auto_register": False,
        "require_auth": False,  # refuse charge points that have no AuthorizationKey set
        "tls_cert": "",
        "tls_key": "",
        "websocket_ping_interval": 60.0,
        "data_transfer_vendors": ["PicoCharge"],  # DataTransfer vendorIds answered Accepted
    },
    "http": {
        "host": "0.0.0.0",
        "port": 8080,
        "threads": 8,
        "max_upload_bytes": 64 * 1024 * 1024,
        "max_json_bytes": 1024 * 1024,  # request bodies of every route but uploads
    },
    "mqtt": {
        "url": "",  # empty: embedded broker; mqtt://user:pass@host:port for an external one
        "embedded_host": "127.0.0.1",
        "embedded_port": 1883,
        "client_id": "picocharge-central",
        "max_payload_bytes": 256,
        "topic_prefix": "picocharge",
    },
    "thingspeak": {
        "rate_limit": True,
        "min_interval": 15.0,
        "bridge_interval": 15.0,
        "bridge_tick": 1.0,
        "bridge_timeout": 10.0,
        "bridge_max_backlog": 960,
    },
    "files": {
        "firmware_dir": "",  # default: <data_dir>/firmware
        "diagnostics_dir": "",  # default: <data_dir>/diagnostics
    },
}


def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, list):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(like, bool):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


@dataclass
class Config:
    """A two-level mapping section → key → value with attribute-style section access."""

    values: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEFAULTS))

    def __getattr__(self, section: str) -> dict[str, Any]:
        try:
            return self.__dict__["values"][section]
        except KeyError as exc:
            raise AttributeError(section) from exc

    def set(self, dotted: str, value: Any) -> None:
        section, _, key = dotted.partition(".")
        if section not in DEFAULTS or key not in DEFAULTS[section]:
            raise KeyError(f"unknown configuration key {dotted!r}")
        like = DEFAULTS[section][key]
        if isinstance(value, str) and not isinstance(like, str):
            value = _coerce(value, like)
        elif isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        self.values[section][key] = value

    def merge(self, data: dict[str, Any]) -> None:
        for section, keys in data.items():
            if not isinstance(keys, dict):
                raise KeyError(f"configuration section {section!r} must be a table")
            for key, value in keys.items():
                self.set(f"{section}.{key}", value)

    # Derived paths -----------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return Path(self.values["server"]["data_dir"])

    @property
    def database_path(self) -> Path:
        return Path(self.values["store"]["path"] or self.data_dir / "picocharge.db")

    @property
    def firmware_dir(self) -> Path:
        return Path(self.values["files"]["firmware_dir"] or self.data_dir / "firmware")

    @property
    def diagnostics_dir(self) -> Path:
        return Path(self.values["files"]["diagnostics_dir"] or self.data_dir / "diagnostics")


def load_config(
    toml_path: str | os.PathLike | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Build the effective configuration: defaults < TOML < environment < overrides.

    Environment variables are named ``PICOCHARGE_<SECTION>_<KEY>``, e.g.
    ``PICOCHARGE_OCPP_PORT=9001``; ``PICOCHARGE_CONFIG`` names the TOML file.
    """
    config = Config()
    environ = os.environ if environ is None else environ
    toml_path = toml_path or environ.get("PICOCHARGE_CONFIG")
    if toml_path:
        with open(toml_path, "rb") as handle:
            config.merge(tomllib.load(handle))
    for section, keys in DEFAULTS.items():
        for key in keys:
            name = f"PICOCHARGE_{section.upper()}_{key.upper()}"
            if name in environ:
                config.set(f"{section}.{key}", environ[name])
    for dotted, value in (overrides or {}).items():
        config.set(dotted, value)
    return config
