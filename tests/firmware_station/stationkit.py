"""Helpers for the station scenarios: read the firmware's own view through its console
(`ev.report()`), wait for world conditions, run a local MQTT broker and a ThingSpeak
recorder on 127.0.0.1."""

from __future__ import annotations

import getpass
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.waiting import wait_until

# A board process the host held longer than this (its machine.Timer thread's longest delay
# behind a deadline): a check of the firmware's own timing says nothing on such a host
HOST_TOO_SLOW_MS = 1000


def host_lag_ms(board) -> int:
    """The longest the host held the board's process (ms, the board's clock): how far its
    machine.Timer thread, which the firmware's event loop does not hold up, ran behind."""
    return int(board.world()["timer_late_max_ms"])


def assert_loop_gap_within(board, r: dict, bound_ms: int) -> None:
    """The firmware's longest event-loop stretch (`loop_gap_ms` of report `r`) is under
    `bound_ms`, less what the host itself held the process for (measured on the board's
    clock; the two maxima may fall at different times, so this is the lenient side by at
    most that lag). A host that held it over HOST_TOO_SLOW_MS fails as too slow, by name."""
    lag = host_lag_ms(board)
    gap = r["loop_gap_ms"]
    if gap >= bound_ms and lag > HOST_TOO_SLOW_MS:
        pytest.fail(f"host too slow for this check (lag {lag} ms; loop gap {gap} ms)")
    assert gap - lag < bound_ms, (
        f"the event loop stalled for up to {gap} ms, {lag} ms of it at most the host's")


def assert_energy_within(board, billed: float, delivered: float, tolerance: float,
                         detail=None) -> None:
    """The firmware billed `delivered` Wh within `tolerance`; if not, the failure says how
    far the host held the board, and past HOST_TOO_SLOW_MS fails as too slow, by name."""
    if abs(billed - delivered) <= tolerance:
        return
    lag = host_lag_ms(board)
    if lag > HOST_TOO_SLOW_MS:
        pytest.fail(f"host too slow for this check (lag {lag} ms): billed {billed} Wh for "
                    f"{delivered} Wh delivered")
    raise AssertionError(f"billed {billed} Wh for {delivered} Wh delivered, tolerance "
                         f"{tolerance:.3f} Wh (host lag {lag} ms at most): {detail}")


def report(board, timeout=20.0) -> dict:
    """The firmware's report (`ev.report()` typed on its console)."""
    mark = board.console.mark()
    board.control("console", line="ev.report()")
    match = board.wait_for(r"^report (\{.*\})$", timeout=timeout, start=mark)
    return json.loads(match.group(1))


def wait_world(board, predicate, timeout=20.0, what="world condition"):
    holder = {}

    def check():
        holder["w"] = board.world()
        return predicate(holder["w"])

    try:
        wait_until(check, timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; world: {holder.get('w')}") from None
    return holder["w"]


BOOTED = []  # boards of the running test (their consoles are shown when it fails)


def relay_open_latency(w: dict, period_ms: int = 20) -> tuple[int, int]:
    """(latency, stall) in ms on the board's clock: from the world's unplug to the relay
    opening, and how late the board's safety timer ran meanwhile (each gap between its
    callbacks beyond one period: a host too loaded to schedule the board's timer thread).
    The firmware's own part of the latency is latency - stall."""
    before = w["unplugged_ms"]
    opened = [t for t in w["relay_open_events"] if t >= before]
    assert opened, ("the relay did not open after the unplug", before, w["relay_open_events"])
    fires = w["timer_fires"]
    earlier = [t for t in fires if t <= before]
    window = earlier[-1:] + [t for t in fires if before < t <= opened[0]]
    stall = sum(max(0, b - a - period_ms) for a, b in zip(window, window[1:]))
    return opened[0] - before, stall


def boot(board_factory, config, world=None, flash=None, files=None):
    """Boot a board and wait until its app is ready (console REPL task running).
    `files` ({name: bytes}) are put on its flash (directory `flash`) before it starts."""
    cfg = {"cp_id": "PICO-0007"}
    cfg.update(config)
    settings = {"dht_blocking_ms": 0}
    settings.update(world or {})
    if files:
        flash.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (flash / name).parent.mkdir(parents=True, exist_ok=True)
            (flash / name).write_bytes(data)
    board = board_factory(cfg, world=settings, flash=flash)
    BOOTED.append(board)
    board.wait_for(r"^ready: ", timeout=40)
    board.control("console", line="import ev")
    return board


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Mosquitto on 127.0.0.1:<port>, started and stopped by PID.

    `tls=(cert PEM, key PEM)` makes the port TLS-only; `users={name: password}` makes it
    refuse anonymous clients and wrong credentials. A secured broker gets a second, plain
    anonymous listener on `sub_port` for the tests' own subscribers."""

    def __init__(self, tmp_path, port=None, tls=None, users=None):
        self.port = port or free_port()
        self.sub_port = self.port
        self.conf = tmp_path / f"mosquitto-{self.port}.conf"
        # `user`: a broker started as root drops to the mosquitto user by default, which
        # cannot read the password and key files under the test's private tmp_path
        lines = ["per_listener_settings true", "persistence false", f"user {getpass.getuser()}",
                 f"listener {self.port} 127.0.0.1"]
        if tls is not None:
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        if users:
            passwords = tmp_path / f"mosquitto-{self.port}.passwd"
            passwords.write_text("")
            for name, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), name, password],
                               check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if tls is not None or users:
            self.sub_port = free_port()
            lines += [f"listener {self.sub_port} 127.0.0.1", "allow_anonymous true"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None

    def start(self):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            pytest.fail("mosquitto is missing: `make test` installs it (apt-get install mosquitto)")
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.sub_port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            self.proc.wait(10)
        self.proc = None


class BlackHoles:
    """TCP black holes on 127.0.0.1, what a network that is up but does not answer looks
    like from a board:

    - `silent()`: a listener that never accepts or reads. The kernel completes the TCP
      handshake (the connection sits in the accept queue), takes the client's bytes and
      never answers: a hung broker or server, or a half-open path where requests vanish.
    - `unreachable()`: a listener whose accept queue is full. The kernel drops every further
      SYN, so a connect hangs in SYN retransmissions as it does towards a host behind a
      router without uplink or a firewall that drops packets (without root, dropping SYNs
      on 127.0.0.1 cannot be arranged any other way).

    Each returns its port; `close(port)` frees it (a real server may then take the port)."""

    def __init__(self):
        self.sockets = {}

    def silent(self) -> int:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(128)
        port = srv.getsockname()[1]
        self.sockets[port] = [srv]
        return port

    def unreachable(self) -> int:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        held = [srv]
        for _ in range(4):  # fill the accept queue (backlog 0 holds one on Linux)
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            held.append(c)
        self.sockets[port] = held
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
            raise AssertionError("the accept queue is not full: connects still succeed")
        except TimeoutError:
            pass
        finally:
            probe.close()
        return port

    def close(self, port: int) -> None:
        for s in self.sockets.pop(port, []):
            s.close()

    def close_all(self) -> None:
        for port in list(self.sockets):
            self.close(port)


_SUBSCRIBERS = itertools.count(1)


class Subscriber:
    """A paho-mqtt client that records every message (topic, payload, qos, retain)."""

    def __init__(self, port, topics):
        import paho.mqtt.client as mqtt

        self.messages = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="test-sub-%d" % next(_SUBSCRIBERS))
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        for topic in topics:
            self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload, msg.qos, bool(msg.retain)))
            self.cond.notify_all()

    def wait(self, predicate, timeout=30.0, what="message"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in self.messages if predicate(m)]
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} within {timeout}s; got {self.messages[-5:]}")
                self.cond.wait(left)

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


class ThingSpeakRecorder:
    """A local HTTP server answering as ThingSpeak does and recording every request.

    `mode`: "ok" (update -> entry id, bulk -> 202 {"success": true}), "zero" (update body
    `0`: not inserted), "error" (HTTP 500)."""

    def __init__(self, port=0, tls=None):
        """`tls`: an ssl.SSLContext to serve HTTPS with."""
        self.requests = []
        self.tls = tls
        self.mode = "ok"
        self.entry = 0
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status, body, ctype="text/plain"):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with recorder.lock:
                    recorder.requests.append({
                        "t": time.monotonic(), "method": "POST", "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body, "mode": recorder.mode})
                    mode = recorder.mode
                    if mode == "error":
                        self._answer(500, "Internal Server Error")
                        return
                    if self.path.endswith("/bulk_update.json"):
                        self._answer(202, '{"success":true}', "application/json")
                        return
                    if mode == "zero":
                        self._answer(200, "0")
                        return
                    recorder.entry += 1
                    self._answer(200, str(recorder.entry))

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def parse_status_lines(text: str) -> list[str]:
    return re.findall(r"^status: (\S+)", text, re.M)
