"""The embedded broker as a real part: Mosquitto (Debian's package), started by the server
with its configuration, password file, ACL and persistence in ``<data_dir>/mqtt``.

Why it outlives a crash of the server: Mosquitto writes its persistence file only at
``autosave_interval`` and when it exits (mosquitto.conf(5)); a broker that died with a
SIGKILLed server would take every message it had acknowledged since the last save with it.
So the broker runs in its own session (a SIGKILL of the server, or a Ctrl-C to the
terminal's process group, does not reach it), keeps accepting and acknowledging telemetry,
and queues it for the ingest's persistent session; the restarted server finds it by its
pid file, checks that the process is this data directory's broker, re-adopts it (rewrites
the credentials, SIGHUP) and the ingest drains the queue. A clean stop of the server
stops the broker with SIGTERM, which makes it write its persistence file; the next start
loads it. What remains: a crash of Mosquitto itself (or of the machine) loses what
arrived since its last autosave (``mqtt.broker_autosave_seconds``)."""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from server.mqtt.credentials import BrokerCredentials, write_private

log = logging.getLogger(__name__)

GUARANTEE = ("Mosquitto: QoS 1 sessions and queued messages are persisted in {dir} and the "
             "broker outlives a crash of the server, so telemetry acknowledged to a station "
             "survives it")


def find_mosquitto(configured: str = "") -> str | None:
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


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
    """Start (or re-adopt), reload and stop the data directory's Mosquitto."""

    kind = "mosquitto"

    def __init__(self, binary: str, host: str, port: int, directory: Path,
                 credentials: BrokerCredentials, autosave_seconds: int = 10,
                 max_queued_messages: int = 1_000_000) -> None:
        self.binary = binary
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
        self.port: int | None = None
        self.pid: int | None = None
        self.adopted = False
        self._proc: subprocess.Popen | None = None
        credentials.on_change = self.reload

    @property
    def guarantee(self) -> str:
        return GUARANTEE.format(dir=self.directory)

    # Lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        state = self._read_state()
        running = self._running_pid()
        if running is not None:
            wanted = self.requested_port or state.get("port")
            if (state.get("host") == self.host and state.get("port") == wanted
                    and _accepting(self.host, wanted)):
                self.pid, self.port, self.adopted = running, wanted, True
                self._write_conf(wanted)
                self.reload()
                log.info("MQTT broker: re-adopted Mosquitto (pid %d) still running on %s:%d "
                         "from before", running, self.host, wanted)
                return wanted
            log.info("MQTT broker: stopping the previous Mosquitto (pid %d): its listener "
                     "differs from the configuration", running)
            self._terminate(running)
        port = self.requested_port
        if not port:
            previous = state.get("port")
            port = previous if previous and _port_free(self.host, previous) else _free_port(self.host)
        self._write_conf(port)
        self.pid_file.unlink(missing_ok=True)
        with open(self.log_file, "ab") as log_handle:
            # start_new_session: the broker must not die with the server (see module doc)
            self._proc = subprocess.Popen([self.binary, "-c", str(self.conf_file)],
                                          stdin=subprocess.DEVNULL, stdout=log_handle,
                                          stderr=log_handle, start_new_session=True)
        self.pid = self._proc.pid
        deadline = time.monotonic() + timeout
        while not _accepting(self.host, port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Mosquitto did not start on {self.host}:{port}: "
                                   f"{self._log_tail()}")
            time.sleep(0.05)
        self.port = port
        write_private(self.state_file, json.dumps({"host": self.host, "port": port}) + "\n")
        log.info("MQTT broker: Mosquitto (pid %d) listening on %s:%d", self.pid, self.host, port)
        return port

    def reload(self) -> None:
        """Make the broker reread its password file and ACL (SIGHUP). Mosquitto then
        disconnects clients whose credentials no longer hold."""
        if self.pid is not None and _alive(self.pid):
            os.kill(self.pid, signal.SIGHUP)

    def stop(self) -> None:
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

    # Files -----------------------------------------------------------------------
    def _running_pid(self) -> int | None:
        """The pid of this data directory's broker if it still runs (not any process that
        happens to have the pid from the file now)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if not _alive(pid) or str(self.conf_file).encode() not in cmdline:
            return None
        return pid

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
            f"password_file {d / 'passwd'}",
            f"acl_file {d / 'acl'}",
            # a client id is bound to the username, hence to its password: nobody can take
            # the ingest's (or a station's) session over
            "use_username_as_clientid true",
            f"log_dest file {d / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages false",
            f"listener {port} {self.host}",
        ]
        write_private(self.conf_file, "\n".join(lines) + "\n")
