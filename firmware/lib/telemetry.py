"""Telemetry over MQTT, per the shared contract (docs/architecture.md):

- `picocharge/<cp_id>/telemetry`: one JSON object (<= 256 bytes), QoS 1, every
  `intervals.telemetry_s`; keys ts seq t rh tmcu v a w wh cp st lim rssi heap up, a key
  left out when its sensor has nothing.
- `picocharge/<cp_id>/state`: retained `online` after connecting, `offline` as the last
  will (and on a clean shutdown).

The connection is an `mqtt_link.Link` (non-blocking connect, TLS for mqtts://, every
answer awaited with `mqtt.timeout_s`, reconnection with backoff and jitter up to
`mqtt.max_backoff_s`). The station identifies itself: client id and user name = cp_id,
password = `mqtt.password` if set, else the password in the URL, else the charge point's
AuthorizationKey (the live one: a key rotated over OCPP applies at the next connection),
else `ocpp.password`. While the broker is away, reports wait in a bounded buffer
(`mqtt.buffer`, oldest dropped first, counted); a report leaves the buffer only once the
broker acknowledged it (PUBACK).

Inside the OCPP session instead (`link` = a telemetry_ocpp.OcppTelemetryLink, which app.py
passes when a second TLS session does not fit the heap, or `mqtt.via` is "ocpp"): the same
reports, buffer and backoff, each report an OCPP DataTransfer; no state topic then (the
OCPP connection is the station's presence).

Optional: `thingspeak.mqtt` publishes the ThingSpeak fields on a second link; see
thingspeak.py.
"""

import asyncio
import gc
import time

# The first report waits this long at most for the meter's first reading (a loaded host or
# an interrupt storm can spoil its first passes): a report without v/a/w then means the
# meter has nothing, as the contract says of an absent sensor, never "not measured yet".
FIRST_REPORT_WAIT_MS = 10000
KEYS = ("ts", "seq", "t", "rh", "tmcu", "v", "a", "w", "wh", "cp", "st", "lim", "rssi", "heap", "up")
MAX_PAYLOAD = 256


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
    def __init__(self, config, station, clock, status_fn, wifi=None, log=print, flash=None,
                 key_fn=None, link=None):
        section = config["mqtt"]
        self.cp_id = config["cp_id"]
        self.station = station
        self.clock = clock
        self.status_fn = status_fn
        self.wifi = wifi
        self.log = log
        self.interval_s = section.get("interval_s", config["intervals"].get("telemetry_s", 60))
        # umqtt-style bytes topics: written to the socket as they are on every port
        self.topic = ("picocharge/%s/telemetry" % self.cp_id).encode()
        self.state_topic = ("picocharge/%s/state" % self.cp_id).encode()
        self.key_fn = key_fn
        self.ocpp_password = (config.get("ocpp") or {}).get("password")
        self.buffer = Ring(section.get("buffer", 30))
        self.seq = 0
        self.published = 0
        self.failures = 0  # publishes the broker did not acknowledge (connection dropped)
        self.start_ms = time.ticks_ms()
        self.paused = None  # when it says so, no report is taken (telemetry_ocpp.py)
        self.skipped = 0  # reports not taken meanwhile
        if link is not None:  # inside the OCPP session (telemetry_ocpp.py)
            self.link = link
            self.state_topic = None
            self.paused = link.paused
            return
        from mqtt_link import Link  # here: thingspeak.py imports Ring from this module

        link = self.link = Link(
            section.get("url", "mqtt://127.0.0.1"), self.cp_id, user=section.get("user"),
            password=section.get("password"), ca_file=section.get("ca_file"),
            insecure=section.get("insecure", False), flash=flash,
            will=(self.state_topic, b"offline", True, 1),
            keepalive_s=section.get("keepalive_s", max(30, int(self.interval_s * 3))),
            timeout_s=section.get("timeout_s", 5), max_backoff_s=section.get("max_backoff_s", 60),
            log=log, name="mqtt")
        if link.user is None:
            link.user = self.cp_id
        if link.password is None:
            link.password = self.station_key

    def station_key(self):
        """The MQTT password when none is configured: the AuthorizationKey."""
        key = self.key_fn() if self.key_fn is not None else None
        return key or self.ocpp_password

    def connected(self):
        return self.link.connected()

    def summary(self):
        out = self.link.summary()
        out["published"] = self.published
        out["buffered"] = len(self.buffer)
        out["dropped"] = self.buffer.dropped
        out["publish_failures"] = self.failures
        out["skipped"] = self.skipped
        return out

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

    async def connect(self):
        """One connection attempt (when the backoff allows it), then `online`."""
        if self.wifi is not None and not self.wifi.is_up():
            self.link.last_error = "no wifi"
            return False
        if not await self.link.connect():
            return False
        if self.state_topic is None:
            return True
        return await self.link.publish(self.state_topic, b"online", True, 1)

    async def flush(self):
        """Publish the buffer in order; False (connection dropped) on the first failure."""
        while len(self.buffer):
            if not await self.link.publish(self.topic, self.buffer.peek(), False, 1):
                self.failures += 1
                self.log("%s: connection lost (%s), %d report(s) buffered" % (
                    self.link.name, self.link.last_error, len(self.buffer)))
                return False
            self.buffer.pop()
            self.published += 1
        return True

    def shutdown(self):
        """Clean disconnect: the will is not sent then, so say offline first."""
        self.link.close(self.state_topic, None if self.state_topic is None else b"offline")

    def _first_reading_pending(self, now):
        """True while the first report still waits for the meter's first reading."""
        if self.seq or self.skipped:
            return False
        measured = getattr(self.station, "has_measured", None)
        if measured is None or measured():
            return False
        return time.ticks_diff(now, self.start_ms) < FIRST_REPORT_WAIT_MS

    async def run(self):
        next_ms = time.ticks_ms()
        link = self.link
        while True:
            now = time.ticks_ms()
            if self._first_reading_pending(now):
                next_ms = now  # report as soon as the meter has read
            elif time.ticks_diff(now, next_ms) >= 0:
                next_ms = time.ticks_add(next_ms, int(self.interval_s * 1000))
                if time.ticks_diff(now, next_ms) > 0:
                    next_ms = time.ticks_add(now, int(self.interval_s * 1000))
                if self.paused is not None and self.paused():
                    if not self.skipped % 30:
                        self.log("%s: no reports while an https transfer holds the OCPP link "
                                 "(%d skipped)" % (self.link.name, self.skipped + 1))
                    self.skipped += 1
                else:
                    self.enqueue()
            if link.due():
                await self.connect()
            if link.connected():
                if len(self.buffer):
                    await self.flush()
                else:
                    await link.keep_alive()
            await asyncio.sleep_ms(self._idle_ms(next_ms))

    def _idle_ms(self, next_ms):
        """How long the loop may sleep: until the next report, reconnect attempt or
        keep-alive ping is due (nothing else feeds it), at least 200 ms, at most 5 s."""
        wait = min(time.ticks_diff(next_ms, time.ticks_ms()), self.link.idle_ms())
        return max(200, min(5000, wait))
