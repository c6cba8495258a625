"""`python -m server` as a separate process, for tests that kill it: started on ephemeral
ports (or the ones given), its PORTS line parsed, stopped by PID."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    def __init__(self, data_dir: Path, *extra: str, ocpp_port: int = 0, mqtt_port: int = 0,
                 env: dict | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.args = [sys.executable, "-m", "server", "--data-dir", str(self.data_dir),
                     "--ocpp-host", "127.0.0.1", "--ocpp-port", str(ocpp_port),
                     "--http-host", "127.0.0.1", "--http-port", "0",
                     "--mqtt-port", str(mqtt_port), "--log-level", "WARNING", *extra]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 60) -> ServerProcess:
        # Output goes to a file: a pipe nobody reads would block a talkative server.
        self.log_path = self.data_dir.parent / f"server-{id(self)}.log"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.args, cwd=REPO, stdout=log,
                                        stderr=subprocess.STDOUT, text=True, env=self.env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"^PORTS ocpp=(\d+) http=(\d+) mqtt=(\d+)$", self.text, re.M)
            if match:
                self.ports = {"ocpp": int(match[1]), "http": int(match[2]),
                              "mqtt": int(match[3])}
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        raise AssertionError("server did not start:\n" + self.text)

    @property
    def text(self) -> str:
        try:
            return self.log_path.read_text()
        except (AttributeError, OSError):
            return ""

    def kill(self, broker_too: bool = False) -> None:
        """SIGKILL: the crash, nothing flushed, no goodbye. The embedded Mosquitto outlives
        its server by design (a restarted server adopts it); `broker_too` ends it as well,
        for the end of a test."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        if broker_too:
            self.stop_broker()

    def stop_broker(self) -> None:
        state = self.data_dir / "mqtt" / "broker.json"
        try:
            pid = json.loads(state.read_text())["pid"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the server did not stop within {timeout:.0f} s of SIGTERM; "
                                 f"its output:\n{self.text[-12000:]}") from None
