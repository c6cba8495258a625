"""``python -m server``: run the PicoCharge central system until SIGTERM/SIGINT.

``python -m server users …`` manages operator accounts and API tokens;
``python -m server backup FILE [--config …]`` makes a consistent copy of the database,
taken while the server runs."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import sqlite3
import sys

from server.accounts import shell_python
from server.app import Application
from server.config import load_config
from server.stop_signals import StopSignals
from server.store import StoreCorrupt
from server.store.sqlite import backup_database

SLOW_SHUTDOWN_S = 30

FLAG_KEYS = {
    "data_dir": "server.data_dir", "db": "store.path", "ocpp_host": "ocpp.host",
    "ocpp_port": "ocpp.port", "http_host": "http.host", "http_port": "http.port",
    "mqtt_url": "mqtt.url", "mqtt_port": "mqtt.embedded_port", "mqtt_host": "mqtt.embedded_host",
    "heartbeat_interval": "ocpp.heartbeat_interval", "unknown": "ocpp.unknown_chargepoints",
    "tls_cert": "ocpp.tls_cert", "tls_key": "ocpp.tls_key", "log_level": "server.log_level",
    "public_url": "server.public_url",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    p.add_argument("--config", help="TOML configuration file (also PICOCHARGE_CONFIG)")
    p.add_argument("--data-dir", help="directory for the database and files (default var)")
    p.add_argument("--db", help="SQLite database path (default <data-dir>/picocharge.db)")
    p.add_argument("--ocpp-host")
    p.add_argument("--ocpp-port", type=int, help="OCPP WebSocket port (default 9000; 0 = any)")
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int, help="dashboard/API port (default 8080; 0 = any)")
    p.add_argument("--mqtt-url", help="external broker, e.g. mqtt://host:1883 (no embedded broker)")
    p.add_argument("--mqtt-host", help="embedded broker bind address (default 127.0.0.1)")
    p.add_argument("--mqtt-port", type=int, help="embedded broker port (default 1883; 0 = any)")
    p.add_argument("--heartbeat-interval", type=int)
    p.add_argument("--unknown", choices=["Rejected", "Pending"],
                   help="BootNotification answer for unknown charge points")
    p.add_argument("--auto-register", action="store_true", default=None,
                   help="accept and register unknown charge points (labs)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--public-url", help="base URL charge points use for firmware/diagnostics")
    p.add_argument("--log-level")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any configuration key, repeatable")
    return p.parse_args(argv)


def backup(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m server backup",
                                description="copy the database consistently while the server runs")
    p.add_argument("file", help="where to write the copy")
    p.add_argument("--config", help="TOML configuration file (also PICOCHARGE_CONFIG)")
    p.add_argument("--data-dir")
    p.add_argument("--db", help="database path (default <data-dir>/picocharge.db)")
    args = p.parse_args(argv)
    overrides = {key: value for key, value in (("server.data_dir", args.data_dir),
                                               ("store.path", args.db)) if value}
    try:
        config = load_config(args.config, overrides=overrides)
        result = backup_database(config.database_path, args.file)
    except (OSError, KeyError, ValueError, sqlite3.Error, StoreCorrupt) as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backup of {config.database_path} written to {result['path']} "
          f"({result['bytes']} bytes, schema version {result['schema_version']})")
    return 0


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["backup"]:
        return backup(argv[1:])
    if argv[:1] == ["users"]:
        from server.accounts_cli import main as users_main

        return users_main(argv[1:])
    args = parse_args(argv)
    overrides = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items()
                 if getattr(args, flag) is not None}
    if args.auto_register:
        overrides["ocpp.auto_register"] = True
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"--set expects SECTION.KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        overrides[key.strip()] = value
    try:
        config = load_config(args.config, overrides=overrides)
    except (OSError, KeyError, ValueError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.server["log_level"].upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("amqtt", "transitions", "websockets", "waitress.queue"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    signals = StopSignals()
    app = Application(config)
    try:
        app.start()
    except Exception as exc:
        logging.getLogger("server").exception("start failed")
        print(f"PicoCharge could not start: {exc}", file=sys.stderr)
        app.stop()
        return 1
    print(f"PicoCharge dashboard: {app.dashboard_url}  (log in as an operator account; "
          f"create one with: {shell_python()} -m server users add NAME --role admin)", flush=True)
    local = [flag for flag, host in (("--ocpp-host", config.ocpp["host"]),
                                     ("--http-host", config.http["host"]),
                                     ("--mqtt-host", config.mqtt["embedded_host"]
                                      if not config.mqtt["url"] else ""))
             if host in LOOPBACK]
    if local:
        print(f"Boards on your network cannot reach this server yet: {', '.join(local)} "
              f"listen on this machine only; give them 0.0.0.0 or this machine's LAN "
              f"address (ocpp.host, http.host, mqtt.embedded_host in a config file)",
              flush=True)
    print(f"OCPP endpoint: {app.ocpp_url}/<chargePointId>", flush=True)
    print(f"MQTT broker: {app.ingest.broker['host']}:{app.ingest.broker['port']}", flush=True)
    if app.broker is not None:
        print(f"MQTT broker guarantee: {app.broker.guarantee}", flush=True)
    print(f"PORTS ocpp={app.ports['ocpp']} http={app.ports['http']} "
          f"mqtt={app.ingest.broker['port']}", flush=True)
    while not signals.wait():
        pass
    # every part's stop is bounded; one that still hangs is shown, thread by thread, in the
    # log instead of leaving an operator with a silent process
    faulthandler.dump_traceback_later(SLOW_SHUTDOWN_S, repeat=True, file=sys.stderr)
    app.stop()
    faulthandler.cancel_dump_traceback_later()
    print("PicoCharge stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
