"""ThingSpeak uplink: the channel field map of the shared contract, ThingSpeak's REST wire
format, the free tier's 15 s rule, and a backlog for outages.

Channel fields (docs/architecture.md): field1 temperature C, field2 humidity %, field3
voltage V, field4 current A, field5 power W, field6 energy kWh, field7 connector status
code (0 Available .. 8 Faulted), field8 MCU temperature C; `status` = status text.

- Samples are taken every `thingspeak.sample_s` (default 1 s) and averaged; one update
  goes out per `thingspeak.interval_s` (default and minimum 15 s: ThingSpeak's free tier
  accepts one update per channel per 15 s, REST and MQTT together). Energy, status and
  the status code are the latest values, the others the mean since the last update.
- An update is `POST <url>/update` with `application/x-www-form-urlencoded` body
  `api_key=KEY&field1=..&..&status=..`; the answer is the new entry id, `0` when
  ThingSpeak did not insert it.
- A failed update (network error, HTTP error, `0` body) goes into a bounded backlog
  (`thingspeak.backlog` entries, default 40; oldest dropped and counted), each with its
  `created_at`. When the channel answers again the backlog goes out first as ONE
  `POST <url>/channels/<id>/bulk_update.json` (`{"write_api_key": .., "updates": [..]}`,
  ThingSpeak answers 202 `{"success": true}`), in the same 15 s slot.
- Optional `thingspeak.mqtt` (`{"url": "mqtt://mqtt3.thingspeak.com:1883", "client_id",
  "user", "password"}`, and for `mqtts://` `"ca_file"` or `"insecure": true`; ThingSpeak's
  MQTT device credentials, not the station's): regular updates go to
  `channels/<id>/publish` (payload `field1=..&..&status=..`, QoS 0) instead of REST over an
  `mqtt_link.Link` (the same guarded link as the telemetry: a dead or silent broker costs a
  bounded wait, never a stalled loop); the backlog still uses bulk REST.

`thingspeak.url` is configurable, so a board can post to the project's own server.
"""

import asyncio
import time

import connector_state
import httpc
from telemetry import Ring, fmt

FREE_TIER_S = 15
AVG_FIELDS = (1, 2, 3, 4, 5, 8)  # fields averaged over the samples of an interval


def urlencode_value(text):
    out = ""
    for ch in text:
        if ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ("0" <= ch <= "9") or ch in "-_.~":
            out += ch
        elif ch == " ":
            out += "+"
        else:
            for b in ch.encode():
                out += "%%%02X" % b
    return out


def json_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ThingSpeak:
    def __init__(self, config, station, clock, status_fn, wifi=None, log=print, http=None,
                 flash=None):
        section = config["thingspeak"]
        self.base = section.get("url", "https://api.thingspeak.com").rstrip("/")
        self.channel = section.get("channel")
        self.key = section.get("write_key", "")
        self.sample_s = section.get("sample_s", 1)
        self.interval_s = max(section.get("interval_s", FREE_TIER_S),
                              section.get("min_interval_s", FREE_TIER_S))
        self.timeout_s = section.get("timeout_s", 10)
        self.station = station
        self.clock = clock
        self.status_fn = status_fn
        self.wifi = wifi
        self.log = log
        self.http = http or httpc
        self.backlog = Ring(section.get("backlog", 40))
        self.mqtt_section = section.get("mqtt")
        self.flash = flash  # for thingspeak.ca_file and thingspeak.mqtt.ca_file
        # https: the server certificate is checked against thingspeak.ca_file (DER on
        # flash); without one the post is refused unless thingspeak.insecure is true
        self.tls_section = {"ca_file": section.get("ca_file"),
                            "insecure": section.get("insecure") is True}
        self.mqtt = None
        self.sums = [0.0] * 9
        self.counts = [0] * 9
        self.samples = 0
        self.updates = 0
        self.bulk_updates = 0
        self.bulk_entries = 0
        self.rejected = 0  # "0" body: ThingSpeak did not insert
        self.http_errors = 0
        self.net_errors = 0
        self.mqtt_publishes = 0
        self.last_error = None
        self.last_sent_ms = None
        self.last_entry = None

    def summary(self):
        return {"url": self.base, "channel": self.channel, "interval_s": self.interval_s,
                "updates": self.updates, "bulk_updates": self.bulk_updates,
                "backlog": len(self.backlog), "dropped": self.backlog.dropped,
                "rejected": self.rejected, "http_errors": self.http_errors,
                "net_errors": self.net_errors, "mqtt_publishes": self.mqtt_publishes,
                "last_entry": self.last_entry, "last_error": self.last_error,
                "mqtt": self.mqtt.summary() if self.mqtt is not None else None}

    # -- sampling and averaging ---------------------------------------------------------
    def sample(self):
        st = self.station
        values = (None, st.temperature_c(), st.humidity(), st.voltage_v(), st.current_a(),
                  st.power_w(), None, None, st.mcu_temperature_c())
        meter = getattr(st, "meter", None)
        # a reading the meter took from a spoiled pass (meter.py: forced) stays out of the
        # averages; the other samples of the interval carry them
        forced = meter is not None and getattr(meter, "forced", False)
        for i in AVG_FIELDS:
            v = values[i]
            if v is not None and not (forced and 3 <= i <= 5):
                self.sums[i] += v
                self.counts[i] += 1
        self.samples += 1

    def take(self):
        """The averaged entry of the interval: (field values, status text, sample count)."""
        st = self.station
        fields = [None] * 9
        for i in AVG_FIELDS:
            if self.counts[i]:
                fields[i] = self.sums[i] / self.counts[i]
            self.sums[i] = 0.0
            self.counts[i] = 0
        fields[6] = st.energy_wh() / 1000.0
        status = self.status_fn() or "Unavailable"
        fields[7] = connector_state.code(status)
        n = self.samples
        self.samples = 0
        return fields, status, n

    @staticmethod
    def _field_text(i, v):
        if i == 6:
            return fmt(v, 3)
        if i == 7:
            return "%d" % v
        if i == 4:
            return fmt(v, 2)
        return fmt(v, 1)

    def form(self, fields, status, key=True):
        """`api_key=..&field1=..&..&status=..` (the update and MQTT payload)."""
        parts = ["api_key=" + urlencode_value(self.key)] if key else []
        for i in range(1, 9):
            if fields[i] is not None:
                parts.append("field%d=%s" % (i, self._field_text(i, fields[i])))
        parts.append("status=" + urlencode_value(status))
        return "&".join(parts)

    def bulk_entry(self, fields, status, ts):
        parts = ['"created_at":"%s"' % self.clock.iso(ts)]
        for i in range(1, 9):
            if fields[i] is not None:
                parts.append('"field%d":%s' % (i, self._field_text(i, fields[i])))
        parts.append('"status":' + json_string(status))
        return "{" + ",".join(parts) + "}"

    # -- sending --------------------------------------------------------------------------
    def _tls(self):
        """The SSL context for an https:// ThingSpeak, made per post (not held)."""
        if not self.base.startswith("https:"):
            return None
        return httpc.tls_context(self.tls_section, self.flash)

    async def post_update(self, body):
        """True if ThingSpeak inserted the entry."""
        try:
            resp = await self.http.post(
                self.base + "/update", body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=self.timeout_s, max_body=256, ssl_ctx=self._tls())
        except Exception as exc:
            self.net_errors += 1
            self.last_error = "update: %r" % (exc,)
            return False
        text = (resp.body or b"").strip()
        if resp.status != 200:
            self.http_errors += 1
            self.last_error = "update: HTTP %d" % resp.status
            return False
        if text == b"0" or not text:
            self.rejected += 1
            self.last_error = "update: 0 (not inserted)"
            return False
        self.updates += 1
        self.last_entry = text.decode()
        return True

    async def post_bulk(self):
        """Send the whole backlog as one bulk_update.json; True if accepted."""
        n = len(self.backlog)
        items = self.backlog.items
        head = self.backlog.head
        size = len(items)
        entries = []
        for k in range(n):
            entries.append(items[(head + k) % size])
        body = '{"write_api_key":%s,"updates":[%s]}' % (json_string(self.key), ",".join(entries))
        entries = None
        url = "%s/channels/%s/bulk_update.json" % (self.base, self.channel)
        try:
            resp = await self.http.post(url, body, headers={"Content-Type": "application/json"},
                                        timeout=self.timeout_s, max_body=512,
                                        ssl_ctx=self._tls())
        except Exception as exc:
            self.net_errors += 1
            self.last_error = "bulk: %r" % (exc,)
            return False
        if resp.status not in (200, 202) or b"true" not in (resp.body or b""):
            self.http_errors += 1
            self.last_error = "bulk: HTTP %d %s" % (resp.status, (resp.body or b"")[:40])
            return False
        for _ in range(n):
            self.backlog.pop()
        self.bulk_updates += 1
        self.bulk_entries += n
        self.log("thingspeak: backlog of %d entries sent (bulk_update.json)" % n)
        return True

    async def publish_mqtt(self, payload):
        """True once the channel feed publish went out; False: see self.last_error."""
        link = self.mqtt
        if link is None:
            from mqtt_link import Link

            sec = self.mqtt_section
            link = self.mqtt = Link(
                sec.get("url", "mqtt://mqtt3.thingspeak.com"), sec.get("client_id", "picocharge"),
                user=sec.get("user"), password=sec.get("password"), ca_file=sec.get("ca_file"),
                insecure=sec.get("insecure", False), flash=self.flash, keepalive_s=60,
                timeout_s=sec.get("timeout_s", 5), max_backoff_s=sec.get("max_backoff_s", 60),
                log=self.log, name="thingspeak mqtt")
        if not link.connected():
            if not link.due():
                self.last_error = "mqtt: waiting to reconnect (%s)" % link.last_error
                return False
            if not await link.connect():
                self.last_error = "mqtt: %s" % link.last_error
                return False
        topic = ("channels/%s/publish" % self.channel).encode()
        if not await link.publish(topic, payload.encode(), False, 0):
            self.last_error = "mqtt: %s" % link.last_error
            return False
        self.mqtt_publishes += 1
        return True

    async def send(self):
        """One 15 s slot: the backlog first (bulk), else the averaged update."""
        fields, status, n = self.take()
        ts = self.clock.now()
        if n == 0:
            return
        if self.wifi is not None and not self.wifi.is_up():
            self.backlog.push(self.bulk_entry(fields, status, ts))
            return
        if len(self.backlog):
            self.backlog.push(self.bulk_entry(fields, status, ts))
            await self.post_bulk()
            return
        if self.mqtt_section:
            if not await self.publish_mqtt(self.form(fields, status, key=False)):
                self.net_errors += 1
                self.backlog.push(self.bulk_entry(fields, status, ts))
            return
        if not await self.post_update(self.form(fields, status)):
            self.backlog.push(self.bulk_entry(fields, status, ts))

    async def run(self):
        self.log("thingspeak: channel %s at %s, one update per %d s" % (
            self.channel, self.base, self.interval_s))
        next_sample = time.ticks_ms()
        next_send = time.ticks_add(next_sample, int(self.interval_s * 1000))
        while True:
            now = time.ticks_ms()
            if time.ticks_diff(now, next_sample) >= 0:
                self.sample()
                next_sample = time.ticks_add(next_sample, int(self.sample_s * 1000))
                if time.ticks_diff(now, next_sample) > 0:
                    next_sample = time.ticks_add(now, int(self.sample_s * 1000))
            if time.ticks_diff(now, next_send) >= 0:
                await self.send()
                self.last_sent_ms = time.ticks_ms()
                # the next slot counts from when this one went out: never closer than 15 s
                next_send = time.ticks_add(self.last_sent_ms, int(self.interval_s * 1000))
            await asyncio.sleep_ms(100)
