"""The embedded MQTT broker (amqtt), so the first run needs nothing else installed.
Anonymous access; bind it to 127.0.0.1 unless the boards on the LAN must reach it.

`BrokerProcess` (what the server uses) runs it in a child process, `python -m
server.mqtt.broker`, started and stopped with the server: amqtt is pure Python, and in
the server's own process it competed for the interpreter lock with the OCPP endpoint and
the API (the benchmark saw the API stop answering at 500 stations). The child exits when
the server's end of its stdin pipe closes, so a crashed server leaves no broker behind.
`EmbeddedBroker` is the broker on a thread and event loop of the calling process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading

from amqtt.broker import Broker

log = logging.getLogger(__name__)


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


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Broker | None = None
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
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.requested_port}",
                                      "max_connections": 0}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        self._broker = SubscribedRetainedBroker(config)
        await self._broker.start()
        server = self._broker._servers["default"].instance
        self.port = server.sockets[0].getsockname()[1]
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)

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


class BrokerProcess:
    """The embedded broker in a child process; same interface as EmbeddedBroker."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> int:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "server.mqtt.broker", "--host", self.host,
             "--port", str(self.requested_port)],
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
        log.info("embedded MQTT broker (pid %d) listening on %s:%d", self._proc.pid, self.host, self.port)
        return self.port

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _serve_child(host: str, port: int) -> int:
    """Child process: run the broker until SIGTERM or until the parent's pipe closes."""
    broker = EmbeddedBroker(host, port)
    try:
        bound = broker.start()
    except RuntimeError as exc:
        print(f"ERROR {exc}", flush=True)
        return 1
    print(f"PORT {bound}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    def watch_parent() -> None:
        try:
            while os.read(sys.stdin.fileno(), 1024):
                pass
        except OSError:
            pass
        done.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    done.wait()
    broker.stop()
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="the embedded MQTT broker (started by the server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(_serve_child(args.host, args.port))
