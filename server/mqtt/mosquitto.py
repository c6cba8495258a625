"""The embedded broker as a real part: Mosquitto (Debian's package), started by the server
with its configuration, credentials and persistence in ``<data_dir>/mqtt``.

Why it outlives a crash of the server: Mosquitto writes its persistence file only at
``autosave_interval`` and when it exits (mosquitto.conf(5)); a broker that died with a
SIGKILLed server would take every message it had acknowledged since the last save with it.
So the broker runs in its own session (a SIGKILL of the server, or a Ctrl-C to the
terminal's process group, does not reach it) and keeps accepting, acknowledging and
queueing telemetry for the ingest's persistent session. The restarted server finds it by
its pid file (checking that the process is this data directory's broker), stops it with
SIGTERM, on which Mosquitto writes its persistence file, and starts it again on the same
file, port and freshly written credentials; the ingest then drains the queue. A clean stop
of the server stops the broker the same way. What remains: a crash of Mosquitto itself
(or of the machine) loses what arrived since its last autosave
(``mqtt.broker_autosave_seconds``).

Identity and ACL are Mosquitto's dynamic-security plugin: every client has a fixed client
id bound to its username and password, so nobody can take the ingest's session (the
password file's ``use_username_as_clientid`` would do that too, but Mosquitto 2.0.11
crashes when an anonymous client is refused under it with a client id that is in use);
changes apply at once through the plugin's ``$CONTROL`` topic, and the plugin disconnects
a client whose credentials were changed or deleted.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from server.mqtt.credentials import BrokerCredentials, write_private
from server.mqtt.pollloop import PollLoop

log = logging.getLogger(__name__)

GUARANTEE = ("Mosquitto: QoS 1 sessions and queued messages are persisted in {dir} and the "
             "broker outlives a crash of the server, so telemetry acknowledged to a station "
             "survives it")
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
# this many credential changes at once are applied by restarting Mosquitto (see _flush_loop)
BULK_RESTART = 50
UNCHANGED = object()  # a queued change that leaves the station's key as it is
GATHER_QUIET_S = 0.2


def find_mosquitto(configured: str = "") -> str | None:
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def find_dynsec_plugin() -> str | None:
    for pattern in ("/usr/lib/*/mosquitto_dynamic_security.so",
                    "/usr/lib/mosquitto_dynamic_security.so",
                    "/usr/local/lib/mosquitto_dynamic_security.so"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def _accepting(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    try:
        socket.create_connection((target, port), 0.5).close()
        return True
    except OSError:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


class MosquittoBroker:
    """Start (restarting a survivor of a crash), change credentials of, and stop the data
    directory's Mosquitto."""

    kind = "mosquitto"

    def __init__(self, binary: str, plugin: str, host: str, port: int, directory: Path,
                 credentials: BrokerCredentials, autosave_seconds: int = 10,
                 max_queued_messages: int = 1_000_000,
                 tls: tuple[str, str, int] | None = None) -> None:
        self.binary = binary
        self.plugin = plugin
        self.host = host
        self.requested_port = port
        self.directory = Path(directory).resolve()
        self.credentials = credentials
        self.autosave_seconds = autosave_seconds
        self.max_queued_messages = max_queued_messages
        self.conf_file = self.directory / "mosquitto.conf"
        self.pid_file = self.directory / "mosquitto.pid"
        self.state_file = self.directory / "broker.json"
        self.log_file = self.directory / "mosquitto.log"
        self.dynsec_file = self.directory / "dynamic-security.json"
        self.port: int | None = None
        self.tls = tls  # (certificate, key, port or 0): a second listener, mqtts
        self.tls_port: int | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        self._admin: mqtt.Client | None = None
        # cp_id → {"key": new key, None (remove) or UNCHANGED, "enabled": bool or None}
        self._pending: dict[str, dict] = {}
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._batch_done = threading.Event()
        self._responses: dict[str, dict] = {}
        self._answered = threading.Condition()
        self._lifecycle = threading.RLock()  # a restart for a bulk change vs. stop()
        credentials.on_change = self.apply
        credentials.on_state = self.apply_state

    @property
    def guarantee(self) -> str:
        return GUARANTEE.format(dir=self.directory)

    # Lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        state = self._read_state()
        survivor = self._running_pid()
        if survivor is not None:
            # the broker of a server that crashed: it kept acknowledging and queueing;
            # SIGTERM makes it write all of that to its persistence file
            log.info("MQTT broker: stopping Mosquitto (pid %d) left running by the previous "
                     "server process; it saves its queue and starts again", survivor)
            self._terminate(survivor)
        port = self.requested_port
        if not port:
            previous = state.get("port")
            port = previous if previous and _port_free(self.host, previous) else _free_port(self.host)
        if self.tls is not None:
            self.tls_port = self.tls[2] or (
                state.get("tls_port") if state.get("tls_port")
                and _port_free(self.host, state["tls_port"]) else _free_port(self.host))
        self._spawn(port, timeout)
        self._connect_admin(timeout)
        log.info("MQTT broker: Mosquitto (pid %d) listening on %s:%d", self.pid, self.host, port)
        return port

    def _spawn(self, port: int, timeout: float) -> None:
        """Write the configuration and the credentials, start Mosquitto, wait until it
        listens."""
        self._write_conf(port)
        write_private(self.dynsec_file, json.dumps(self.credentials.dynsec_document(), indent=1))
        self.pid_file.unlink(missing_ok=True)
        with open(self.log_file, "ab") as log_handle:
            # start_new_session: the broker must not die with the server (see module doc)
            self._proc = subprocess.Popen([self.binary, "-c", str(self.conf_file)],
                                          stdin=subprocess.DEVNULL, stdout=log_handle,
                                          stderr=log_handle, start_new_session=True)
        self.pid = self._proc.pid
        # known at once (Mosquitto writes its pid file a moment later): a server killed
        # right now must still find this broker at its next start
        write_private(self.state_file, json.dumps({"host": self.host, "port": port,
                                                   "tls_port": self.tls_port,
                                                   "pid": self.pid}) + "\n")
        deadline = time.monotonic() + timeout
        while not (_accepting(self.host, port)
                   and (self.tls_port is None or _accepting(self.host, self.tls_port))):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Mosquitto did not start on {self.host}:{port}: "
                                   f"{self._log_tail()}")
            time.sleep(0.05)
        self.port = port

    def _restart(self) -> None:
        """Stop (persistence written) and start again on the same file and port with the
        credentials regenerated from `passwd`; clients reconnect, the administrator too."""
        with self._lifecycle:
            if self._admin is None or self.pid is None:
                return  # being stopped
            self._terminate(self.pid)
            if self._proc is not None:
                self._proc.wait(5)
            self._spawn(self.port, 15.0)

    def stop(self) -> None:
        admin, self._admin = self._admin, None
        self._wake.set()  # ends the flusher
        if admin is not None:
            self._admin_loop.stop()
        with self._lifecycle:
            pid, self.pid = self.pid, None
            if pid is not None:
                self._terminate(pid)
            if self._proc is not None:
                self._proc.wait(5)
                self._proc = None

    def _terminate(self, pid: int, timeout: float = 30.0) -> None:
        """SIGTERM (Mosquitto writes its persistence file as it exits), then wait."""
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if self._proc is not None and self._proc.pid == pid:
                self._proc.poll()  # reap our own child
            if time.monotonic() > deadline:
                log.error("Mosquitto (pid %d) did not exit within %.0f s of SIGTERM; killing it",
                          pid, timeout)
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)

    # Credentials at run time ------------------------------------------------------
    def _connect_admin(self, timeout: float) -> None:
        creds = self.credentials
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=creds.admin_user)
        client.username_pw_set(creds.admin_user, creds.admin_password)
        connected = threading.Event()

        def on_connect(c, userdata, flags, reason_code, properties):
            if reason_code.is_failure:
                log.error("MQTT broker: the credentials manager was refused: %s", reason_code)
                return
            c.subscribe(CONTROL_TOPIC + "/response", 1)
            connected.set()

        client.on_connect = on_connect
        client.on_message = self._on_response
        client.reconnect_delay_set(0.2, 5)
        client.connect(self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1",
                       self.port)
        self._admin_loop = PollLoop(client, "mqtt-credentials-admin", 0.2, 5).start()
        self._admin = client
        if not connected.wait(max(timeout, 1.0)):
            raise RuntimeError("Mosquitto: the dynamic-security administrator could not connect")
        threading.Thread(target=self._flush_loop, name="mqtt-credentials", daemon=True).start()

    def _on_response(self, client, userdata, message) -> None:
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        with self._answered:
            for response in responses:
                token = response.get("correlationData")
                if token:
                    self._responses[token] = response
            self._answered.notify_all()

    def apply(self, cp_id: str, key: str | None, revoke: bool = True) -> None:
        """Give a station its credentials and its role (or take them away). Changes are
        sent in batches (the plugin rewrites its whole file once per batch, so registering
        thousands of stations stays cheap); one that revokes a key returns only once the
        broker has applied it and disconnected whoever used the old key. A new station may
        be refused for the few milliseconds until its batch is applied (it retries)."""
        self._queue(cp_id, "key", key, revoke)

    def apply_state(self, cp_id: str, enabled: bool) -> None:
        """Enable or disable a station's client (the plugin disconnects a disabled one);
        a disabling returns once the broker has applied it."""
        self._queue(cp_id, "enabled", enabled, not enabled)

    def _queue(self, cp_id: str, field: str, value, wait: bool) -> None:
        with self._pending_lock:
            self._pending.setdefault(cp_id, {"key": UNCHANGED, "enabled": None})[field] = value
            done = self._batch_done
        self._wake.set()
        if wait and not done.wait(15):
            log.error("MQTT broker: revoking the access of %s was not confirmed", cp_id)

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait()
            if self._admin is None:
                self._batch_done.set()
                return
            # let a burst of registrations gather: until none came for GATHER_QUIET_S (each
            # registration hashes its key first, tens of milliseconds), at most a second
            gathering_until = time.monotonic() + 1.0
            size = -1
            while time.monotonic() < gathering_until:
                with self._pending_lock:
                    if len(self._pending) == size:
                        break
                    size = len(self._pending)
                time.sleep(GATHER_QUIET_S)
            self._wake.clear()
            with self._pending_lock:
                batch, self._pending = self._pending, {}
                done, self._batch_done = self._batch_done, threading.Event()
            try:
                if len(batch) >= BULK_RESTART:
                    # Mosquitto 2.0's plugin rewrites its whole file after every command:
                    # thousands of registrations through $CONTROL take minutes, a restart
                    # on the regenerated file a fraction of a second
                    log.info("MQTT broker: %d credential changes at once: restarting "
                             "Mosquitto with them", len(batch))
                    self._restart()
                elif batch:
                    self._send(batch)
            except Exception:
                log.exception("MQTT broker: a credentials change failed")
            finally:
                done.set()

    def _send(self, batch: dict[str, dict]) -> None:
        """One $CONTROL message for the batch. Deleting a client first makes the plugin
        disconnect a connection that used the old key; disabling one disconnects it too."""
        commands = []
        for cp_id, change in batch.items():
            key, enabled = change["key"], change["enabled"]
            if key is UNCHANGED:
                if enabled is not None:
                    commands.append({"command": "enableClient" if enabled else "disableClient",
                                     "username": cp_id})
                continue
            role = self.credentials.station_role(cp_id)
            commands += [{"command": "deleteClient", "username": cp_id},
                         {"command": "deleteRole", "rolename": role["rolename"]}]
            if key is not None:
                commands += [
                    {"command": "createRole", "rolename": role["rolename"]},
                    *({"command": "addRoleACL", "rolename": role["rolename"], **acl}
                      for acl in role["acls"]),
                    {"command": "createClient", "username": cp_id, "password": key,
                     "clientid": cp_id, "roles": [{"rolename": role["rolename"]}]}]
                if not self.credentials.is_enabled(cp_id):
                    commands.append({"command": "disableClient", "username": cp_id})
        if not commands:
            return
        for command in commands:
            command["correlationData"] = secrets.token_hex(8)
        admin = self._admin
        if admin is None:
            return
        admin.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
        last = commands[-1]["correlationData"]
        deadline = time.monotonic() + 30
        with self._answered:
            while last not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("MQTT broker: no answer to a credentials change of %d station(s)",
                              len(batch))
                    return
                self._answered.wait(left)
            answers = [self._responses.pop(c["correlationData"], {}) for c in commands]
        for command, answer in zip(commands, answers):
            error = answer.get("error")
            if error and command["command"] not in ("deleteClient", "deleteRole"):
                log.error("MQTT broker: %s for %s failed: %s", command["command"],
                          command.get("username") or command.get("rolename"), error)

    # Files -----------------------------------------------------------------------
    def _running_pid(self) -> int | None:
        """The pid of this data directory's broker if it still runs (not any process that
        happens to have the pid from the file now)."""
        candidates = [self._read_state().get("pid")]
        try:
            candidates.insert(0, int(self.pid_file.read_text().strip()))
        except (OSError, ValueError):
            pass
        for pid in candidates:
            if not isinstance(pid, int):
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if _alive(pid) and str(self.conf_file).encode() in cmdline:
                return pid
        return None

    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").strip().splitlines()[-5:])
        except OSError:
            return "(no log)"

    def _write_conf(self, port: int) -> None:
        d = self.directory
        lines = ["# Written by the PicoCharge server at every start; edits are lost."]
        if os.geteuid() == 0:
            # as root Mosquitto would switch to the `mosquitto` user, which cannot read the
            # 0600 files of the data directory
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        lines += [
            f"pid_file {d / 'mosquitto.pid'}",
            "persistence true",
            f"persistence_location {d}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {self.autosave_seconds}",
            # beyond this many messages queued for one client (the ingest while the server
            # is down) Mosquitto drops new ones silently
            f"max_queued_messages {self.max_queued_messages}",
            # the ingest acknowledges after its commit: let a commit's worth be in flight
            "max_inflight_messages 1000",
            "allow_anonymous false",
            f"plugin {self.plugin}",
            f"plugin_opt_config_file {self.dynsec_file}",
            f"log_dest file {d / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages false",
            f"listener {port} {self.host}",
        ]
        if self.tls is not None:
            lines += [f"listener {self.tls_port} {self.host}",
                      f"certfile {Path(self.tls[0]).resolve()}",
                      f"keyfile {Path(self.tls[1]).resolve()}",
                      "tls_version tlsv1.2"]
        write_private(self.conf_file, "\n".join(lines) + "\n")
