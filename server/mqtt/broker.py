"""The embedded MQTT broker: which one runs, and the pip-only fallback.

`open_embedded_broker` picks Mosquitto (server/mqtt/mosquitto.py: persistent, outlives a
crash of the server) when its binary is there, else amqtt, a pure-Python broker that
keeps everything in memory: a crash of the server can lose telemetry it acknowledged.
Both enforce the same identity and topic rule (server/mqtt/credentials.py): no anonymous
clients, a station's username is its chargePointId and its password its AuthorizationKey,
its client id is its username, it publishes only under ``picocharge/<its id>/``, and only
the ingest subscribes.

`AmqttBroker` (what the server uses for the fallback) runs amqtt in a child process,
``python -m server.mqtt.broker``: in the server's own process it competed for the
interpreter lock with the OCPP endpoint and the API. The child exits when the server's end
of its stdin pipe closes, so a crashed server leaves no broker behind (and its queued
messages are gone); SIGHUP makes it reread the password file and disconnect clients whose
credentials no longer hold. `EmbeddedBroker` is amqtt on a thread of the calling process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import amqtt.broker
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import MQTTError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from server.mqtt.credentials import (
    BrokerCredentials,
    check_mosquitto_hash,
    read_password_file,
    topic_allowed,
)
from server.mqtt.mosquitto import MosquittoBroker, find_mosquitto
from server.stop_signals import StopSignals

log = logging.getLogger(__name__)

AMQTT_GUARANTEE = ("amqtt (the pip-only fallback broker): sessions and queued "
                   "messages are in memory only, so a crash of the server can lose telemetry "
                   "already acknowledged to stations; install Debian's mosquitto package")


def open_embedded_broker(config, credentials: BrokerCredentials):
    """The embedded broker the configuration asks for (`mqtt.embedded_broker`: auto,
    mosquitto or amqtt), not yet started."""
    mqtt = config.mqtt
    choice = mqtt["embedded_broker"]
    if choice not in ("auto", "mosquitto", "amqtt"):
        raise ValueError("mqtt.embedded_broker must be auto, mosquitto or amqtt")
    binary = find_mosquitto(mqtt["mosquitto_binary"]) if choice != "amqtt" else None
    if binary is not None:
        tls = None
        if mqtt["tls_cert"] and mqtt["tls_key"]:
            tls = (mqtt["tls_cert"], mqtt["tls_key"], int(mqtt["embedded_tls_port"]))
        return MosquittoBroker(binary, mqtt["embedded_host"], mqtt["embedded_port"],
                               credentials.directory, credentials,
                               autosave_seconds=mqtt["broker_autosave_seconds"],
                               max_queued_messages=mqtt["broker_max_queued_messages"], tls=tls,
                               connection_log=mqtt["broker_connection_log"])
    missing = "the mosquitto binary"
    if choice == "mosquitto":
        raise RuntimeError(f"mqtt.embedded_broker = mosquitto but {missing} was not found "
                           "(apt-get install mosquitto, or set mqtt.mosquitto_binary)")
    if choice == "auto":
        log.warning("MQTT broker: %s was not found; falling back to amqtt", missing)
    if mqtt["tls_cert"]:
        log.warning("MQTT broker: amqtt has no TLS listener here; mqtt.tls_cert is ignored "
                    "(install mosquitto for mqtts)")
    return AmqttBroker(mqtt["embedded_host"], mqtt["embedded_port"], credentials)


# The identity and topic rule inside amqtt ----------------------------------------------
class PasswordFile:
    """The password file, reread when it changes (the server replaces it atomically)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._seen: tuple | None = None
        self.users: dict[str, str] = {}

    def refresh(self) -> bool:
        try:
            stat = self.path.stat()
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except OSError:
            seen = None
        if seen == self._seen:
            return False
        self._seen = seen
        self.users = read_password_file(self.path)
        return True

    def accepts(self, username, password) -> bool:
        self.refresh()
        return bool(username) and check_mosquitto_hash(password, self.users.get(username))


@dataclass
class _IdentityConfig:
    password_file: str = ""
    ingest_user: str = ""
    prefix: str = "picocharge"


class StationAuthPlugin(BaseAuthPlugin):
    """Username and password must match the password file; no anonymous clients."""

    Config = _IdentityConfig

    def __init__(self, context) -> None:
        super().__init__(context)
        self.passwords = PasswordFile(self.context.config.password_file)

    async def authenticate(self, *, session) -> bool:
        return self.passwords.accepts(session.username, session.password)


class StationTopicPlugin(BaseTopicPlugin):
    """Stations publish only under `<prefix>/<username>/`; only the ingest subscribes."""

    Config = _IdentityConfig

    async def topic_filtering(self, *, session=None, topic=None, action=None) -> bool:
        if action == Action.RECEIVE:
            return True
        config = self.context.config
        return topic_allowed(session.username if session else None, config.ingest_user,
                             config.prefix, topic or "", subscribe=action == Action.SUBSCRIBE)


def _checked_connect_handler(passwords: PasswordFile):
    """amqtt (0.12) looks up a persistent session by client id, copies the new CONNECT's
    username into it and takes the connected one over *before* authenticating: anybody
    could kick the ingest off with its client id. This handler refuses bad credentials as
    the CONNECT is read, and binds the client id to the username (Mosquitto's
    use_username_as_clientid)."""

    class CheckedConnectHandler(BrokerProtocolHandler):
        @classmethod
        async def init_from_connect(cls, reader, writer, plugins_manager, loop=None):
            handler, session = await super().init_from_connect(reader, writer, plugins_manager,
                                                               loop)
            if not passwords.accepts(session.username, session.password):
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
                await writer.close()
                raise MQTTError("connection refused: not authorised")
            session.client_id = session.username
            return handler, session

    return CheckedConnectHandler


class SubscribedRetainedBroker(Broker):
    """amqtt's broker, minus one bug: on every CONNECT, amqtt (0.11-0.12) sends the new
    client the retained messages matching *every* subscription in the broker, not only the
    client's own. Boards (umqtt.simple, which subscribes to nothing) then receive other
    stations' retained presence messages while waiting for a PUBACK and fail. Retained
    messages go only to sessions that hold the subscription."""

    async def _publish_retained_messages_for_subscription(self, subscription, session):
        holders = self._subscriptions.get(subscription[0], ())
        if not any(holder is session for holder, _qos in holders):
            return
        await super()._publish_retained_messages_for_subscription(subscription, session)

    async def disconnect_revoked(self, passwords: PasswordFile) -> int:
        """Close the connections whose credentials the password file no longer holds."""
        revoked = 0
        for session, handler in list(self._sessions.values()):
            if (session.transitions.is_connected()
                    and not passwords.accepts(session.username, session.password)):
                revoked += 1
                await handler.writer.close()
        return revoked


class EmbeddedBroker:
    """amqtt on a thread and event loop of the calling process."""

    def __init__(self, host: str, port: int, password_file: str, ingest_user: str,
                 prefix: str = "picocharge") -> None:
        self.host = host
        self.requested_port = port
        self.identity = {"password_file": password_file, "ingest_user": ingest_user,
                         "prefix": prefix}
        self.passwords = PasswordFile(password_file)
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: SubscribedRetainedBroker | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 15.0) -> int:
        self._thread = threading.Thread(target=self._run, name="mqtt-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError("embedded MQTT broker did not start")
        if self._error is not None:
            raise RuntimeError(f"embedded MQTT broker failed: {self._error}") from self._error
        return self.port

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        amqtt.broker.BrokerProtocolHandler = _checked_connect_handler(self.passwords)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.requested_port}",
                                      "max_connections": 0}},
            "plugins": {"server.mqtt.broker.StationAuthPlugin": dict(self.identity),
                        "server.mqtt.broker.StationTopicPlugin": dict(self.identity)},
        }
        self._broker = SubscribedRetainedBroker(config)
        await self._broker.start()
        server = self._broker._servers["default"].instance
        self.port = server.sockets[0].getsockname()[1]
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)

    def reload(self) -> None:
        """Reread the password file; disconnect clients whose credentials were revoked."""
        if self._loop is None or self._broker is None:
            return
        self.passwords.refresh()
        future = asyncio.run_coroutine_threadsafe(
            self._broker.disconnect_revoked(self.passwords), self._loop)
        revoked = future.result(10)
        if revoked:
            log.info("embedded MQTT broker: %d client(s) disconnected (credentials revoked)",
                     revoked)

    def stop(self) -> None:
        if self._loop is None or self._broker is None or not self._loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            future.result(10)
        except Exception:
            log.exception("embedded broker shutdown failed")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class AmqttBroker:
    """The amqtt fallback in a child process; the server's handle on it."""

    kind = "amqtt"
    guarantee = AMQTT_GUARANTEE

    def __init__(self, host: str, port: int, credentials: BrokerCredentials) -> None:
        self.host = host
        self.requested_port = port
        self.credentials = credentials
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        credentials.on_change = self.reload
        credentials.on_state = self.reload  # a disabled station is out of the password file

    def start(self, timeout: float = 20.0) -> int:
        creds = self.credentials
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "server.mqtt.broker", "--host", self.host,
             "--port", str(self.requested_port), "--password-file", str(creds.password_file),
             "--ingest-user", creds.ingest_user, "--prefix", creds.prefix],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self._proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        line = result[0] if result else ""
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError("embedded MQTT broker did not start"
                               + (f": {line.strip()}" if line else ""))
        self.port = int(line.split()[1])
        log.info("MQTT broker: amqtt (pid %d) listening on %s:%d", self._proc.pid, self.host,
                 self.port)
        return self.port

    def reload(self, cp_id: str | None = None, key: str | None = None, revoke: bool = True) -> None:
        """The password file changed (for `cp_id`): the child rereads it on SIGHUP."""
        self.credentials.flush()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        self.credentials.flush()
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _serve_child(args) -> int:
    """Child process: run amqtt until SIGTERM or until the parent's pipe closes."""
    broker = EmbeddedBroker(args.host, args.port, args.password_file, args.ingest_user,
                            args.prefix)
    try:
        bound = broker.start()
    except RuntimeError as exc:
        print(f"ERROR {exc}", flush=True)
        return 1
    print(f"PORT {bound}", flush=True)
    signals = StopSignals(other=(signal.SIGHUP,))
    parent_gone = threading.Event()  # set by a thread, never by a signal handler

    def watch_parent() -> None:
        try:
            while os.read(sys.stdin.fileno(), 1024):
                pass
        except OSError:
            pass
        parent_gone.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    while not signals.wait(0.1) and not parent_gone.is_set():
        if signals.take(signal.SIGHUP):
            broker.reload()
    broker.stop()
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="the embedded amqtt broker (started by the server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--ingest-user", required=True)
    parser.add_argument("--prefix", default="picocharge")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(_serve_child(parser.parse_args()))
