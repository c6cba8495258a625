"""Helpers for the station scenarios: read the firmware's own view through its console
(`ev.report()`), wait for world conditions, run a local MQTT broker and a ThingSpeak
recorder on 127.0.0.1."""

from __future__ import annotations

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


def report(board, timeout=20.0) -> dict:
    """The firmware's report (`ev.report()` typed on its console)."""
    mark = board.console.mark()
    board.control("console", line="ev.report()")
    match = board.wait_for(r"^report (\{.*\})$", timeout=timeout, start=mark)
    return json.loads(match.group(1))


def wait_until(predicate, timeout=20.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


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


def boot(board_factory, config, world=None):
    """Boot a board and wait until its app is ready (console REPL task running)."""
    cfg = {"cp_id": "PICO-0007"}
    cfg.update(config)
    settings = {"dht_blocking_ms": 0}
    settings.update(world or {})
    board = board_factory(cfg, world=settings)
    BOOTED.append(board)
    board.wait_for(r"^ready: ", timeout=40)
    board.control("console", line="import ev")
    return board


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Mosquitto on 127.0.0.1:<port>, started and stopped by PID."""

    def __init__(self, tmp_path, port=None):
        self.port = port or free_port()
        self.conf = tmp_path / f"mosquitto-{self.port}.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             "persistence false\n")
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
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            self.proc.wait(10)
        self.proc = None


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

    def __init__(self):
        self.requests = []
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

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def parse_status_lines(text: str) -> list[str]:
    return re.findall(r"^status: (\S+)", text, re.M)
