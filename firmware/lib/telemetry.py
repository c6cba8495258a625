"""Telemetry over MQTT (umqtt.simple), per the shared contract (docs/architecture.md):

- `picocharge/<cp_id>/telemetry`: one JSON object (<= 256 bytes), QoS 1, every
  `intervals.telemetry_s`; keys ts seq t rh tmcu v a w wh cp st lim rssi heap up, a key
  left out when its sensor has nothing.
- `picocharge/<cp_id>/state`: retained `online` after connecting, `offline` as the last
  will (and on a clean shutdown).

umqtt.simple is blocking. Before connecting, the broker is probed with a non-blocking
asyncio connection (so a dead host never stalls the loop in `connect()`), and the socket
gets `mqtt.timeout_s` for every later read/write (umqtt resets a socket to blocking inside
`wait_msg()`; the wrapper below keeps the timeout). A failure drops the connection and
retries with exponential backoff (1 s .. `mqtt.max_backoff_s`). While the broker is away,
reports wait in a bounded buffer (`mqtt.buffer`, oldest dropped first, counted).

Optional: `thingspeak.mqtt` publishes the ThingSpeak fields on a second connection; see
thingspeak.py.
"""

import asyncio
import gc
import time

KEYS = ("ts", "seq", "t", "rh", "tmcu", "v", "a", "w", "wh", "cp", "st", "lim", "rssi", "heap", "up")
MAX_PAYLOAD = 256


def parse_url(url, default_port=1883):
    """mqtt://[user:password@]host[:port] -> (host, port, user, password)."""
    rest = url.split("://", 1)[1] if "://" in url else url
    rest = rest.split("/", 1)[0]
    user = password = None
    if "@" in rest:
        cred, rest = rest.rsplit("@", 1)
        if ":" in cred:
            user, password = cred.split(":", 1)
        else:
            user = cred
    port = default_port
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = int(tail[1:])
    elif ":" in rest:
        host, p = rest.rsplit(":", 1)
        port = int(p)
    else:
        host = rest
    return host, port, user, password


def _b(text):
    return text.encode() if isinstance(text, str) else text


class TimeoutSocket:
    """Wraps a socket so umqtt's `setblocking(True)` keeps a timeout instead of blocking
    forever on a broker that went silent."""

    def __init__(self, sock, timeout_s):
        self.sock = sock
        self.timeout_s = timeout_s
        sock.settimeout(timeout_s)

    def setblocking(self, flag):
        if flag:
            self.sock.settimeout(self.timeout_s)
        else:
            self.sock.setblocking(False)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def read(self, n):
        return self.sock.read(n)

    def write(self, buf, n=None):
        if n is None:
            return self.sock.write(buf)
        return self.sock.write(buf, n)

    def close(self):
        self.sock.close()


def fmt(value, digits):
    if digits == 0:
        return "%d" % round(value)
    if digits == 1:
        return "%.1f" % value
    if digits == 2:
        return "%.2f" % value
    return "%.3f" % value


def payload(fields):
    """Compact JSON of a telemetry dict, keys in contract order, None left out."""
    parts = []
    for key in KEYS:
        value = fields.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            parts.append('"%s":"%s"' % (key, value))
        elif isinstance(value, float):
            digits = 3 if key == "wh" else 1
            parts.append('"%s":%s' % (key, fmt(value, digits)))
        else:
            parts.append('"%s":%d' % (key, value))
    return "{" + ",".join(parts) + "}"


class Ring:
    """A bounded FIFO of byte strings (no asyncio.Queue on MicroPython)."""

    def __init__(self, size):
        self.items = [None] * size
        self.head = 0
        self.count = 0
        self.dropped = 0

    def push(self, item):
        size = len(self.items)
        if self.count == size:
            self.head = (self.head + 1) % size
            self.count -= 1
            self.dropped += 1
        self.items[(self.head + self.count) % size] = item
        self.count += 1

    def peek(self):
        return self.items[self.head] if self.count else None

    def pop(self):
        if not self.count:
            return None
        item = self.items[self.head]
        self.items[self.head] = None
        self.head = (self.head + 1) % len(self.items)
        self.count -= 1
        return item

    def __len__(self):
        return self.count


class Telemetry:
    def __init__(self, config, station, clock, status_fn, wifi=None, log=print, mqtt_mod=None):
        section = config["mqtt"]
        self.cp_id = config["cp_id"]
        self.station = station
        self.clock = clock
        self.status_fn = status_fn
        self.wifi = wifi
        self.log = log
        self.host, self.port, user, password = parse_url(section.get("url", "mqtt://127.0.0.1"))
        self.user = section.get("user", user)
        self.password = section.get("password", password)
        self.interval_s = section.get("interval_s", config["intervals"].get("telemetry_s", 60))
        self.timeout_s = section.get("timeout_s", 3)
        self.max_backoff_s = section.get("max_backoff_s", 60)
        self.keepalive = section.get("keepalive_s", max(30, int(self.interval_s * 3)))
        # umqtt writes these to the socket as they are: bytes work on every port
        self.topic = ("picocharge/%s/telemetry" % self.cp_id).encode()
        self.state_topic = ("picocharge/%s/state" % self.cp_id).encode()
        self.buffer = Ring(section.get("buffer", 30))
        self.mqtt_mod = mqtt_mod
        self.client = None
        self.seq = 0
        self.published = 0
        self.failures = 0
        self.connects = 0
        self.backoff = 1
        self.last_error = None
        self.start_ms = time.ticks_ms()
        self.last_tx_ms = None

    def connected(self):
        return self.client is not None

    def summary(self):
        return {"broker": "%s:%d" % (self.host, self.port), "connected": self.connected(),
                "published": self.published, "buffered": len(self.buffer),
                "dropped": self.buffer.dropped, "connects": self.connects,
                "failures": self.failures, "last_error": self.last_error}

    def sample(self):
        """The telemetry dict of this instant (contract keys)."""
        st = self.station
        self.seq += 1
        heap = gc.mem_free() if hasattr(gc, "mem_free") else None
        return {
            "ts": int(self.clock.now()),
            "seq": self.seq,
            "t": st.temperature_c(),
            "rh": st.humidity(),
            "tmcu": st.mcu_temperature_c(),
            "v": st.voltage_v(),
            "a": st.current_a(),
            "w": st.power_w(),
            "wh": st.energy_wh(),
            "cp": st.pilot_state(),
            "st": self.status_fn(),
            "lim": st.offered_a(),
            "rssi": self.wifi.rssi() if self.wifi is not None else None,
            "heap": heap,
            "up": time.ticks_diff(time.ticks_ms(), self.start_ms) // 1000,
        }

    def enqueue(self):
        text = payload(self.sample())
        if len(text) > MAX_PAYLOAD:  # never happens with the contract's keys; stay safe
            text = text[:MAX_PAYLOAD]
        self.buffer.push(text.encode())

    async def _probe(self):
        """Can a TCP connection to the broker be opened? (non-blocking, bounded)"""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout_s)
        except Exception:
            return False
        try:
            writer.close()
            await writer.wait_closed()
        except Exception:
            pass
        return True

    def _mqtt(self):
        if self.mqtt_mod is None:
            from umqtt import simple

            self.mqtt_mod = simple
        return self.mqtt_mod

    async def connect(self):
        if self.wifi is not None and not self.wifi.is_up():
            self.last_error = "no wifi"
            return False
        if not await self._probe():
            self.last_error = "broker %s:%d unreachable" % (self.host, self.port)
            return False
        mod = self._mqtt()
        client = mod.MQTTClient(self.cp_id.encode(), self.host, self.port, _b(self.user),
                                _b(self.password), self.keepalive)
        client.set_last_will(self.state_topic, b"offline", True, 1)
        try:
            client.connect(True)
            client.sock = TimeoutSocket(client.sock, self.timeout_s)
            client.publish(self.state_topic, b"online", True, 1)
        except Exception as exc:
            self.last_error = "connect: %r" % (exc,)
            self._drop(client)
            return False
        self.client = client
        self.connects += 1
        self.last_tx_ms = time.ticks_ms()
        self.log("mqtt: connected to %s:%d" % (self.host, self.port))
        return True

    def _drop(self, client=None):
        client = client or self.client
        self.client = None
        if client is not None and client.sock is not None:
            try:
                client.sock.close()
            except Exception:
                pass

    def flush(self):
        """Publish the buffer in order; False (connection dropped) on the first failure."""
        client = self.client
        while len(self.buffer):
            msg = self.buffer.peek()
            try:
                client.publish(self.topic, msg, False, 1)
            except Exception as exc:
                self.failures += 1
                self.last_error = "publish: %r" % (exc,)
                self.log("mqtt: connection lost (%s), %d report(s) buffered" % (exc, len(self.buffer)))
                self._drop()
                return False
            self.buffer.pop()
            self.published += 1
            self.last_tx_ms = time.ticks_ms()
        return True

    def keepalive_ping(self):
        if self.client is None or self.last_tx_ms is None:
            return
        if time.ticks_diff(time.ticks_ms(), self.last_tx_ms) > self.keepalive * 500:
            try:
                self.client.ping()
                self.client.check_msg()  # reads the PINGRESP (umqtt handles it)
                self.client.sock.setblocking(True)
                self.last_tx_ms = time.ticks_ms()
            except Exception as exc:
                self.last_error = "ping: %r" % (exc,)
                self._drop()

    def shutdown(self):
        """Clean disconnect: the will is not sent then, so say offline first."""
        client = self.client
        if client is None:
            return
        try:
            client.publish(self.state_topic, b"offline", True, 1)
            client.disconnect()
        except Exception:
            pass
        self.client = None

    async def run(self):
        next_ms = time.ticks_ms()
        retry_ms = time.ticks_ms()
        while True:
            now = time.ticks_ms()
            if time.ticks_diff(now, next_ms) >= 0:
                next_ms = time.ticks_add(next_ms, int(self.interval_s * 1000))
                if time.ticks_diff(now, next_ms) > 0:
                    next_ms = time.ticks_add(now, int(self.interval_s * 1000))
                self.enqueue()
            if self.client is None and time.ticks_diff(now, retry_ms) >= 0:
                if await self.connect():
                    self.backoff = 1
                else:
                    retry_ms = time.ticks_add(time.ticks_ms(), self.backoff * 1000)
                    self.backoff = min(self.max_backoff_s, self.backoff * 2)
            if self.client is not None:
                if len(self.buffer):
                    if not self.flush():
                        retry_ms = time.ticks_add(time.ticks_ms(), self.backoff * 1000)
                        self.backoff = min(self.max_backoff_s, self.backoff * 2)
                else:
                    self.keepalive_ping()
            await asyncio.sleep_ms(self._idle_ms(next_ms, retry_ms))

    def _idle_ms(self, next_ms, retry_ms):
        """How long the loop may sleep: until the next report, reconnect attempt or
        keep-alive ping is due (nothing else feeds it), at least 200 ms, at most 5 s."""
        now = time.ticks_ms()
        wait = time.ticks_diff(next_ms, now)
        if self.client is None:
            wait = min(wait, time.ticks_diff(retry_ms, now))
        elif self.last_tx_ms is not None:
            wait = min(wait, time.ticks_diff(self.last_tx_ms, now) + self.keepalive * 500)
        return max(200, min(5000, wait))
