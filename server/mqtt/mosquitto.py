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

Identity and ACL are Mosquitto's own password file and ACL file (``passwd``, ``acl``): a
station's username is its chargePointId, and one ACL pattern (``picocharge/%u/#``) lets it
publish under its own id only; the ingest alone reads. A change of credentials or of a
registration state rewrites ``passwd`` and sends Mosquitto SIGHUP: it rereads both files and
rechecks every connected client, disconnecting only those whose credentials are gone, so a
registration never disconnects the other stations (Mosquitto 2.0's dynamic-security
plugin, used before, rewrites its whole file after every command, so thousands of
registrations had to be applied by restarting the broker, which dropped every client).
Changes are gathered for a moment so that a burst costs one reload.

Client ids: ``use_username_as_clientid`` would bind a client id to its username, but
Mosquitto 2.0.11 crashes when an anonymous client is refused under it with a client id
that is in use (the refused client takes the other's entry out of the broker's table).
So the ingest's client id carries a secret (``credentials.ingest_client_id``): nobody can
take its session without it. A station's client id is its chargePointId; a registered
station could connect with another station's id and push it off (the other reconnects;
nothing it sends is lost or accepted under the wrong id, since topics follow the username).
That remaining gap is documented in docs/server.md (Broker).
"""

from __future__ import annotations

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

from server.mqtt.credentials import BrokerCredentials, write_private

log = logging.getLogger(__name__)

GUARANTEE = ("Mosquitto: QoS 1 sessions and queued messages are persisted in {dir} and the "
             "broker outlives a crash of the server, so telemetry acknowledged to a station "
             "survives it")
GATHER_QUIET_S = 0.2  # a burst of changes gathers until none came for this long (max 1 s)


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


def _round_trip(host: str, port: int, timeout: float = 15.0) -> None:
    """One CONNECT → CONNACK through the broker's loop (anonymous, so refused)."""
    client_id = f"picocharge-probe-{secrets.token_hex(6)}".encode()
    body = (b"\x00\x04MQTT\x04\x02\x00\x00"  # MQTT 3.1.1, clean session, no keepalive
            + len(client_id).to_bytes(2, "big") + client_id)
    target = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    with socket.create_connection((target, port), timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(bytes([0x10, len(body)]) + body)
        answer = b""
        while len(answer) < 4:
            chunk = sock.recv(4 - len(answer))
            if not chunk:
                return  # closed after the refusal: the loop has seen it too
            answer += chunk


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

    def __init__(self, binary: str, host: str, port: int, directory: Path,
                 credentials: BrokerCredentials, autosave_seconds: int = 10,
                 max_queued_messages: int = 1_000_000,
                 tls: tuple[str, str, int] | None = None, connection_log: bool = False) -> None:
        self.binary = binary
        self.connection_log = connection_log
        self.host = host
        self.requested_port = port
        self.directory = Path(directory).resolve()
        self.credentials = credentials
        self.autosave_seconds = autosave_seconds
        self.max_queued_messages = max_queued_messages
        self.conf_file = self.directory / "mosquitto.conf"
        self.acl_file = self.directory / "acl"
        self.pid_file = self.directory / "mosquitto.pid"
        self.state_file = self.directory / "broker.json"
        self.log_file = self.directory / "mosquitto.log"
        self.port: int | None = None
        self.tls = tls  # (certificate, key, port or 0): a second listener, mqtts
        self.tls_port: int | None = None
        self.pid: int | None = None
        self.reloads = 0  # SIGHUPs sent for credential changes (tests and bench read it)
        self._proc: subprocess.Popen | None = None
        self._changed = threading.Event()
        self._revoking = False  # a queued change takes access away: apply without gathering
        self._applied = threading.Condition()
        self._requested = 0  # changes queued so far, and applied so far (by count)
        self._done = 0
        self._stopping = False
        self._flusher: threading.Thread | None = None
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
        self._stopping = False
        self._flusher = threading.Thread(target=self._flush_loop, name="mqtt-credentials",
                                         daemon=True)
        self._flusher.start()
        log.info("MQTT broker: Mosquitto (pid %d) listening on %s:%d", self.pid, self.host, port)
        return port

    def _spawn(self, port: int, timeout: float) -> None:
        """Write the configuration and the ACL, start Mosquitto, wait until it listens
        (``passwd`` is kept current by the credentials)."""
        self._write_conf(port)
        write_private(self.acl_file, self.credentials.acl_document())
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

    def stop(self) -> None:
        self.credentials.flush()  # the files current at a clean stop (the journal covers a crash)
        self._stopping = True
        self._changed.set()  # ends the flusher
        with self._applied:
            self._applied.notify_all()
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
    def apply(self, cp_id: str, key: str | None, revoke: bool = True) -> None:
        """``passwd`` has changed for `cp_id` (a new, changed or removed key): make Mosquitto
        reread it. A change that revokes a key returns once Mosquitto has applied it (and
        disconnected whoever used the old key); a new station may be refused for the moment
        until its change is applied (it retries)."""
        self._request(revoke)

    def apply_state(self, cp_id: str, enabled: bool) -> None:
        """A station was let in (Accepted) or turned away (Pending, Rejected: out of
        ``passwd``, so the reload disconnects it); a turning away returns once applied."""
        self._request(not enabled)

    def _request(self, wait: bool) -> None:
        with self._applied:
            self._requested += 1
            ticket = self._requested
            if wait:
                self._revoking = True
        self._changed.set()
        if not wait:
            return
        deadline = time.monotonic() + 15
        with self._applied:
            while self._done < ticket and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("MQTT broker: taking access away was not confirmed by Mosquitto "
                              "within 15 s")
                    return
                self._applied.wait(left)

    def _flush_loop(self) -> None:
        while True:
            self._changed.wait()
            if self._stopping:
                return
            # let a burst of registrations gather (one reload for all of them): until none
            # came for GATHER_QUIET_S, at most a second; a revocation does not wait
            gathering_until = time.monotonic() + 1.0
            seen = -1
            while time.monotonic() < gathering_until and not self._revoking:
                with self._applied:
                    if self._requested == seen:
                        break
                    seen = self._requested
                time.sleep(GATHER_QUIET_S)
            self._changed.clear()
            with self._applied:
                target, self._revoking = self._requested, False
            try:
                self._reload()
            except Exception:
                log.exception("MQTT broker: applying a credentials change failed")
            with self._applied:
                self._done = max(self._done, target)
                self._applied.notify_all()

    def _reload(self) -> None:
        """SIGHUP: Mosquitto rereads ``passwd`` and ``acl`` at the top of its next loop and
        disconnects clients whose credentials are gone. Two round trips through its loop
        afterwards (a refused CONNECT each) show that the reload has been done."""
        self.credentials.flush()
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, signal.SIGHUP)
        self.reloads += 1
        for _ in range(2):
            _round_trip(self.host, self.port)

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
            f"password_file {self.credentials.password_file}",
            f"acl_file {self.acl_file}",
            f"log_dest file {d / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"connection_messages {'true' if self.connection_log else 'false'}",
            f"listener {port} {self.host}",
        ]
        if self.tls is not None:
            lines += [f"listener {self.tls_port} {self.host}",
                      f"certfile {Path(self.tls[0]).resolve()}",
                      f"keyfile {Path(self.tls[1]).resolve()}",
                      "tls_version tlsv1.2"]
        write_private(self.conf_file, "\n".join(lines) + "\n")
