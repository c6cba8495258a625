"""Telemetry inside the OCPP session: each report (telemetry.payload(), the same compact
JSON the MQTT topic carries) goes to the central system as an OCPP 1.6 DataTransfer

    {"vendorId": "PicoCharge", "messageId": "telemetry", "data": "<the report's JSON>"}

through the charge point's outbox, for a board whose heap holds one TLS session and not
two (a wss:// charge point next to mqtts:// telemetry: docs/firmware.md, "Heap with every
uplink on TLS"), or when the config asks for it (`mqtt.via: "ocpp"`).

    link = OcppTelemetryLink(cp, max_backoff_s=60, log=print)
    Telemetry(config, ..., link=link)    # in place of its mqtt_link.Link

It offers Telemetry the part of mqtt_link.Link's interface a publisher uses (due, connect,
connected, publish, keep_alive, idle_ms, summary, security, close, last_error); the OCPP
link itself (connection, TLS, keep-alive, reconnection) stays the charge point's.

Delivery: a report leaves Telemetry's buffer only when the central system answers
Accepted (it answers so once the row is committed). Rejected, UnknownVendorId,
UnknownMessageId, a CALLERROR, no answer or the link dropping: `publish` returns False,
the report stays buffered and the next attempt waits for a backoff (2^n s, jittered,
at most `max_backoff_s`); while the OCPP link is down nothing is tried.

Transaction messages come first: a report is queued (`outbox.add`, with the barrier
that keeps it behind every journaled transaction message) only while the charge point has
nothing of its own waiting, and at most one report is ever in the outbox, so it never
pushes another message out of the outbox's bounded queue. One report in flight can delay
a message queued after it by one round trip (the link carries one CALL at a time).
"""

import asyncio
import random
import time

VENDOR_ID = "PicoCharge"
MESSAGE_ID = "telemetry"


class OcppTelemetryLink:
    def __init__(self, cp, max_backoff_s=60, log=print, name="telemetry via ocpp"):
        self.cp = cp
        self.max_backoff_s = max_backoff_s
        self.log = log
        self.name = name
        self.up = False
        self.attempts = 0  # consecutive failed deliveries (backoff exponent)
        self.connects = 0
        self.failures = 0
        self.last_error = None
        self.next_ms = time.ticks_ms()
        # the report in the outbox: [payload, answered (Event), status or None, last seen]
        self.pending = None

    # -- state ----------------------------------------------------------------------------
    def _online(self):
        return self.cp.link.online.is_set()

    def paused(self):
        """No reports are taken while an https transfer holds the OCPP link down (ocpp_link
        `hold`): a report kept then is a small object left among the transfer's
        allocations, and a firmware download next to a full buffer ran out of contiguous
        heap for its next TLS session (OSError 12). A firmware update ends in a reboot,
        which empties the buffer anyway."""
        return self.cp.link.held > 0

    def connected(self):
        if self.up and not self._online():
            self.up = False
            self.last_error = "OCPP link offline"
        return self.up

    def due(self):
        return (not self.up and self._online()
                and time.ticks_diff(time.ticks_ms(), self.next_ms) >= 0)

    def security(self):
        """That of the OCPP link: tls (wss with a CA), tls-unchecked (insecure), plain."""
        conf = self.cp.ocpp_conf
        if not self.cp.link.url.startswith("wss:"):
            return "plain"
        if conf.get("ca_file"):
            return "tls"
        return "tls-unchecked" if conf.get("insecure") is True else "refused"

    def summary(self):
        return {"via": "ocpp", "ocpp": self.cp.link.state, "security": self.security(),
                "connected": self.connected(), "connects": self.connects,
                "failures": self.failures, "last_error": self.last_error}

    def idle_ms(self):
        """ms until this link wants the publisher's loop again: the next attempt after a
        failure, or a look at the OCPP link while it is down (1 s)."""
        if self.up:
            return 60000  # nothing to keep alive: the charge point pings its own link
        if not self._online():
            return 1000
        return time.ticks_diff(self.next_ms, time.ticks_ms())

    # -- "connecting": the OCPP link is the charge point's --------------------------------
    async def connect(self):
        if not self._online():
            self.last_error = "OCPP link offline"
            return False
        if not self.up:
            self.up = True
            self.connects += 1
        return True

    async def keep_alive(self):
        """The OCPP link keeps itself alive (heartbeats, WebSocket pings)."""
        return self.connected()

    def close(self, topic=None, payload=None):
        """Nothing to close: the OCPP link belongs to the charge point."""
        self.up = False

    def _fail(self, why):
        self.last_error = why
        self.failures += 1
        self.up = False
        top = min(int(self.max_backoff_s * 1000), 1000 << min(self.attempts, 10))
        self.attempts += 1
        self.next_ms = time.ticks_add(time.ticks_ms(), top * (512 + random.getrandbits(9)) // 1024)
        return False

    # -- delivery -------------------------------------------------------------------------
    def _alive(self, entry):
        """Is the queued report still on its way? Queued, or being sent (the outbox takes
        it out of its queue for the CALL, at most call_timeout s, and puts it back when
        it got no answer)."""
        now = time.ticks_ms()
        if self.cp.outbox.has("DataTransfer"):
            entry[3] = now
            return True
        return time.ticks_diff(now, entry[3]) < (self.cp.link.call_timeout + 2) * 1000

    async def _quiet(self, timeout_ms):
        """Wait until the charge point has nothing of its own queued (outbox and journal
        empty); False if the link dropped or it stayed busy for `timeout_ms`."""
        cp = self.cp
        end = time.ticks_add(time.ticks_ms(), timeout_ms)
        while cp.outbox.items or len(cp.journal):
            if not self._online() or time.ticks_diff(end, time.ticks_ms()) <= 0:
                return False
            await asyncio.sleep_ms(100)
        return self._online()

    def _queue(self, payload):
        entry = self.pending = [payload, asyncio.Event(), None, time.ticks_ms()]

        def answered(res):  # the outbox's on_result: the answer's payload, None for a CALLERROR
            entry[2] = (res.get("status") or "no status") if isinstance(res, dict) else "a CALLERROR"
            entry[1].set()

        data = payload.decode() if isinstance(payload, bytes) else payload
        self.cp.outbox.add("DataTransfer", {"vendorId": VENDOR_ID, "messageId": MESSAGE_ID,
                                            "data": data}, answered, True)
        return entry

    async def publish(self, topic, payload, retain=False, qos=1):
        """Deliver one report (`topic` is the MQTT one, not used here); True once the
        central system answered Accepted, False otherwise (see the module docstring)."""
        while True:
            if not self.connected():
                return False
            entry = self.pending
            if entry is not None and entry[2] is None and not self._alive(entry):
                entry = self.pending = None  # lost (the outbox's queue was full)
            if entry is None:
                # none of ours on its way: queue this one when the charge point is quiet
                if not await self._quiet(int(self.cp.link.call_timeout * 1000)):
                    return self._fail("OCPP link offline" if not self._online() else
                                      "the charge point's own messages kept the link busy")
                entry = self._queue(payload)
            while entry[2] is None:
                if not self._online():
                    return self._fail("OCPP link offline")  # it stays queued: sent again
                if not self._alive(entry):
                    self.pending = None
                    return self._fail("DataTransfer not answered")
                try:
                    await asyncio.wait_for(entry[1].wait(), 1)
                except asyncio.TimeoutError:
                    pass
            self.pending = None
            if entry[2] != "Accepted":
                return self._fail("DataTransfer answered %s" % entry[2])
            if entry[0] == payload:
                self.attempts = 0
                return True
            # an earlier report (since dropped from the full buffer) was still on its way
            # and got accepted: now this one
