"""Run a paho MQTT client on its own thread, like ``loop_start()``, but wait with
``poll()`` instead of ``select()``.

paho's own loop uses ``select()``, which refuses descriptors numbered 1 024 and above. A
central system with a thousand charge points connected holds that many sockets, so an
MQTT client that reconnects then (after a broker restart) would get such a descriptor
and its loop would fail for good. This loop drives the client through paho's documented
external-loop API (``loop_read``/``loop_write``/``loop_misc``, ``want_write``, the
socket-register-write callback) and reconnects with paho's backoff settings.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

_READ = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


class PollLoop:
    def __init__(self, client: mqtt.Client, name: str, reconnect_min: float = 0.2,
                 reconnect_max: float = 30.0) -> None:
        self.client = client
        self.name = name
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self._stopping = threading.Event()
        self._disconnecting = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # paho tells us when it has data it could not write at once (a publish or an
        # acknowledgement from another thread): wake the poll to write it
        client.on_socket_register_write = lambda *_: self._wake()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> PollLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0, disconnect: bool = True) -> None:
        """Send DISCONNECT (unless `disconnect` is False: a crash, for tests) and end."""
        if disconnect and self.client.socket() is not None and self._thread.is_alive():
            self._disconnecting.set()
            self.client.disconnect()
            self._wake()
            self._thread.join(min(timeout, 5.0))
        self._stopping.set()
        self._wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # full (a wake-up is already pending) or closed

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except OSError:
            pass

    def _run(self) -> None:
        delay = self.reconnect_min
        while not self._stopping.is_set():
            sock = self.client.socket()
            if sock is None:
                if self._disconnecting.is_set():
                    return
                try:
                    self.client.reconnect()
                    delay = self.reconnect_min
                except (OSError, ValueError) as exc:
                    log.debug("%s: reconnect failed: %s", self.name, exc)
                    self._stopping.wait(delay)
                    delay = min(delay * 2, self.reconnect_max)
                continue
            poller = select.poll()
            poller.register(sock, _READ | (select.POLLOUT if self.client.want_write() else 0))
            poller.register(self._wake_r, select.POLLIN)
            try:
                ready = poller.poll(1000)
            except OSError:
                ready = []
            rc = mqtt.MQTT_ERR_SUCCESS
            for fd, events in ready:
                if fd == self._wake_r:
                    self._drain_wake()
                    continue
                if events & _READ:
                    rc = self.client.loop_read()
                if rc == mqtt.MQTT_ERR_SUCCESS and events & select.POLLOUT:
                    rc = self.client.loop_write()
            if self.client.socket() is not None:
                if self.client.want_write():
                    rc = self.client.loop_write()
                self.client.loop_misc()
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN) and not self._stopping.is_set():
                time.sleep(min(delay, 1.0))  # the connection was lost: reconnect above
