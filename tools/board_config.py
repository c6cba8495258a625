"""`make config`: write a board's config.local.json by asking for what only you know.

    python -m tools.board_config [--config config.local.json] [--api http://HOST:8080]
                                 [--token TOKEN] [--cp-id ID] [--ssid S] [--wifi-password P]
                                 [--server HOST] [--ocpp-port 9000] [--mqtt-port 1883]
                                 [--key KEY] [--yes]

It asks for the station id, the Wi-Fi network and its password, and the central system's
address on your network (this machine's LAN address is offered), makes a random
AuthorizationKey (or takes yours), and, given an API token (`--token` or
PICOCHARGE_ADMIN_TOKEN), registers the station with that key on the server, so that the
board is admitted on OCPP and MQTT at its first connection. Then it checks the config with
the board's own rules (what `make deploy` checks) and writes it with mode 0600 (it holds
secrets; git ignores it). An answer given as an option is not asked; `--yes` asks nothing
and takes the defaults for the rest (scripts, tests). An existing file is replaced only
after a yes.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tools.deploy import ROOT, config_problems


def lan_address() -> str:
    """This machine's address on its network (the one its default route uses), or
    127.0.0.1 without one. No packet is sent: connecting a UDP socket only picks a route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: documentation only, never routed
            return sock.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def build_config(cp_id: str, ssid: str, wifi_password: str, server: str, ocpp_port: int,
                 mqtt_port: int, key: str) -> dict:
    return {
        "cp_id": cp_id,
        "wifi": {"ssid": ssid, "password": wifi_password},
        # the board's MQTT user name is its cp_id and its password the OCPP key
        "ocpp": {"url": f"ws://{server}:{ocpp_port}/ocpp", "password": key},
        "mqtt": {"url": f"mqtt://{server}:{mqtt_port}"},
        "firmware": {"keys": []},
    }


def register(api: str, token: str, cp_id: str, key: str) -> str:
    """Register the station with its key (or give an existing one this key)."""
    def call(method, path, body):
        request = urllib.request.Request(
            api.rstrip("/") + "/api/v1" + path, data=json.dumps(body).encode(), method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, ""
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")[:300]

    status, detail = call("POST", "/chargepoints", {"id": cp_id, "auth_key": key})
    if status == 409:
        status, detail = call("PATCH", f"/chargepoints/{cp_id}", {"auth_key": key})
        if status == 200:
            return f"{cp_id} was registered already: its key is now this config's"
    if status not in (200, 201):
        raise SystemExit(f"the server refused to register {cp_id}: HTTP {status} {detail}")
    return f"{cp_id} registered on {api} with this config's key"


class Asker:
    """Questions with defaults; with --yes the defaults are taken without asking."""

    def __init__(self, assume_yes: bool) -> None:
        self.assume_yes = assume_yes

    def text(self, question: str, default: str = "", secret: bool = False) -> str:
        if self.assume_yes:
            return default
        prompt = f"{question}" + (f" [{default}]" if default and not secret else "") + ": "
        while True:
            answer = (getpass.getpass(prompt) if secret else input(prompt)).strip()
            if answer or default:
                return answer or default
            print("  an answer is needed")

    def yes(self, question: str) -> bool:
        if self.assume_yes:
            return True
        return input(f"{question} [y/N]: ").strip().lower() in ("y", "yes")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.board_config",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config.local.json")
    parser.add_argument("--api", help="the server's API, to register the station "
                                      "(default http://<server>:8080)")
    parser.add_argument("--token", default=os.environ.get("PICOCHARGE_ADMIN_TOKEN", ""),
                        help="an API token (admin or operator) to register the station with")
    parser.add_argument("--cp-id")
    parser.add_argument("--ssid")
    parser.add_argument("--wifi-password")
    parser.add_argument("--server", help="the central system's address as the board sees it")
    parser.add_argument("--ocpp-port", type=int, default=9000)
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--key", help="the station's AuthorizationKey (default: a random one)")
    parser.add_argument("--yes", action="store_true", help="ask nothing: defaults for the rest")
    args = parser.parse_args(argv)
    ask = Asker(args.yes)

    if args.config.exists() and not ask.yes(f"{args.config} exists: replace it?"):
        print("nothing written")
        return 1
    cp_id = args.cp_id or ask.text("Station id (its chargePointId)", "PICO-0001")
    ssid = args.ssid or ask.text("Wi-Fi network (SSID)")
    wifi_password = (args.wifi_password if args.wifi_password is not None
                     else ask.text("Wi-Fi password", secret=True))
    server = args.server or ask.text("The central system's address on your network",
                                     lan_address())
    key = args.key or secrets.token_hex(16)
    config = build_config(cp_id, ssid, wifi_password, server, args.ocpp_port, args.mqtt_port,
                          key)
    problems, warnings = config_problems(config)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if problems:
        print("the board would refuse or ignore this config; nothing written:\n  "
              + "\n  ".join(problems), file=sys.stderr)
        return 1
    if args.token:
        print(register(args.api or f"http://{server}:8080", args.token, cp_id, key))
    else:
        print(f"not registered (no --token or PICOCHARGE_ADMIN_TOKEN): register {cp_id} on the "
              f"server with the key in {args.config} (ocpp.password) before the board connects")
    fd = os.open(args.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")
    os.chmod(args.config, 0o600)
    print(f"wrote {args.config}; the server must listen where the board can reach it "
          f"(the server says so at start); next: make deploy PORT=/dev/ttyACM0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
