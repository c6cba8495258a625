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
        # FULL: every commit is fsynced before anything is answered (survives power loss);
        # NORMAL survives a crash of the server but not of the machine.
        "synchronous": "FULL",
        "commit_timeout": 10.0,  # an OCPP answer waits this long for its commit at most
        "close_timeout": 10.0,  # at shutdown, how long a failing database is retried
        # retention by the server's receive time; 0 keeps forever
        "retention_days_telemetry": 90,
        "retention_days_meter_values": 365,
        "retention_days_status_history": 365,
        "retention_days_events": 365,
        "retention_days_data_transfers": 365,
        "retention_days_ts_feeds": 365,
        "retention_days_diagnostics_files": 90,
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
        # Refuse charge points without an AuthorizationKey (or a client certificate).
        # false is a lab shortcut: keyless charge points may connect as anyone.
        "require_auth": True,
        "tls_cert": "",
        "tls_key": "",
        "tls_client_ca": "",  # CA of station certificates: enables profile 3 (mutual TLS)
        "tls_client_cert_required": False,  # true: every station must present a certificate
        # Handshake limits per remote address (0 = no limit) and for the whole endpoint.
        "handshake_rate_per_address": 5.0,  # sustained handshakes per second → 429 beyond
        "handshake_burst_per_address": 30,
        "max_connections_per_address": 100,  # open connections → 429 beyond
        "max_unauthenticated_handshakes": 64,  # handshakes being verified → 503 beyond
        "websocket_ping_interval": 60.0,
        "data_transfer_vendors": ["PicoCharge"],  # DataTransfer vendorIds answered Accepted
        # connectorIds a station may use (1..max; 0 is the station itself): beyond it a
        # message is refused, so one station cannot grow the fleet's tables without bound
        "max_connectors": 8,
    },
    "http": {
        "host": "127.0.0.1",  # the dashboard/API stay local unless configured otherwise
        "port": 8080,
        "threads": 8,
        "max_upload_bytes": 64 * 1024 * 1024,
        # Host names the HTTP side answers to (Host/Origin check against DNS rebinding and
        # cross-site requests); empty: server.public_url's host, the bind address, localhost
        "allowed_hosts": [],
        "tls_cert": "",  # PEM certificate (chain): serve HTTPS instead of HTTP
        "tls_key": "",
        "max_json_bytes": 1024 * 1024,  # request bodies of every route but uploads
        # requests per remote address to the routes stations use without an operator login
        # (ThingSpeak API, firmware files, diagnostics uploads); 429 beyond; 0 = no limit
        "station_rate_per_address": 50.0,
        "station_burst_per_address": 500,
    },
    "mqtt": {
        "url": "",  # empty: embedded broker; mqtt://user:pass@host:port for an external one
        "embedded_broker": "auto",  # auto (Mosquitto if installed, else amqtt), mosquitto, amqtt
        "mosquitto_binary": "",  # default: `mosquitto` on PATH, then /usr/sbin/mosquitto
        "embedded_host": "127.0.0.1",
        "embedded_port": 1883,
        # mqtts: with both set, the embedded Mosquitto also listens with TLS on
        # embedded_tls_port (0: any free port), for boards that speak mqtts (the key is then
        # not in the clear on the network); the amqtt fallback has no TLS listener
        "tls_cert": "",
        "tls_key": "",
        "embedded_tls_port": 8883,
        "broker_autosave_seconds": 10,  # Mosquitto's autosave_interval (what its own crash loses)
        "broker_max_queued_messages": 1000000,  # per client (the ingest while the server is down)
        # Mosquitto logs every connection with its client id and username (who connects as whom)
        "broker_connection_log": False,
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
        # Lab shortcut: let the bridge post to loopback, link-local and private addresses.
        "allow_private_targets": False,
    },
    "files": {
        "firmware_dir": "",  # default: <data_dir>/firmware
        "diagnostics_dir": "",  # default: <data_dir>/diagnostics
        "diagnostics_max_bytes": 16 * 1024 * 1024,  # one upload
        "diagnostics_max_bytes_per_station": 128 * 1024 * 1024,  # all of a station's files
        "diagnostics_uploads_per_hour": 12,  # per station
        "diagnostics_token_seconds": 3600,  # lifetime of a GetDiagnostics upload token
    },
    "auth": {
        # an admin API token seeded at start (also PICOCHARGE_ADMIN_TOKEN); >= 32 characters
        "admin_token": "",
        "first_admin": "admin",  # account created (random password) on a first start
        "session_hours": 12.0,  # dashboard session lifetime
        "rate_limit_per_second": 50.0,  # REST requests per token/session (token bucket)
        "rate_limit_burst": 200,
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
    ``PICOCHARGE_OCPP_PORT=9001``; ``PICOCHARGE_CONFIG`` names the TOML file;
    ``PICOCHARGE_ADMIN_TOKEN`` is short for ``PICOCHARGE_AUTH_ADMIN_TOKEN``.
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
    if environ.get("PICOCHARGE_ADMIN_TOKEN"):
        config.set("auth.admin_token", environ["PICOCHARGE_ADMIN_TOKEN"])
    for dotted, value in (overrides or {}).items():
        config.set(dotted, value)
    return config
