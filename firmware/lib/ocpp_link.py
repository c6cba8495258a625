"""The charge point's link to the central system (a base class of
chargepoint.ChargePoint, split out so each module compiles in a small heap): the
WebSocket connection with backoff and jitter, BootNotification, heartbeats and pings,
the one outstanding CALL, and answering the central system's CALLs.

One TLS session at a time: a Pico W's heap holds one mbedTLS session (about 23 KB held,
more during the handshake) next to the running board, not two (docs/firmware.md, "Heap").
An https transfer (firmware download, diagnostics upload) takes the link down while it
runs when the link is wss:// itself (`hold_link` / `release_link`). With a TLS room
(tls_room.py: mqtts telemetry or ThingSpeak over https next to the charge point) the wss
session lives in the room and steps aside (`step_aside` / `come_back`) for each transient
session; a transfer's sessions go through it (`transfer_tls` / `transfer_done`)."""

import asyncio
import gc
import random
import time

import clock as clock_mod
import ocpp_rpc
import ocpp_ws
from ocpp_rpc import CallError


class NotConnected(OSError):
    pass


class Link:
    link_held = 0  # https transfers that asked for the TLS link to stay down
    tls_room = None  # tls_room.Room (app.py): the board's one TLS session at a time
    room_taken = False

    # -- connection ------------------------------------------------------------------------
    def _backoff(self, failures):
        top = min(float(self.cfg.get("ReconnectMaxInterval")), self.backoff_min * (2 ** min(failures, 10)))
        return top * (0.5 + random.getrandbits(16) / 131072)

    async def run(self):
        self.log("ocpp: charge point %s -> %s" % (self.cp_id, self.url))
        if self.url.startswith("wss:") and self.ocpp_conf.get("ca_file") is None:
            self.log("ocpp: WARNING TLS certificate NOT checked (\"insecure\": true)"
                     if self.ocpp_conf.get("insecure") is True else
                     "ocpp: wss:// without ocpp.ca_file: refusing to connect (set \"insecure\": true to skip the check)")
        asyncio.create_task(self._tick_loop())
        asyncio.create_task(self._sender())
        asyncio.create_task(self._pacer())
        fw = self.features.get("fw")
        fw = fw[0] if fw is not None else None
        if fw is not None and fw.needs_reboot:
            self.reboot("Hard")
        if fw is not None and fw.trial is not None:
            asyncio.create_task(fw.trial_watch())
        fw = None  # this coroutine runs forever: a reference would keep ocpp_firmware loaded
        failures = 0
        while True:
            ws = self.ws_obj
            if ws is None:  # allocated once: its buffers are reused across reconnects
                ws = self.ws_obj = ocpp_ws.WebSocket(max_size=int(self.ocpp_conf.get("max_message", 4096)))
            while self.link_held:
                await asyncio.sleep_ms(200)
            wifi = self.wifi
            if wifi is not None and not wifi.is_up():
                self.conn_state = "offline"
                await wifi.event.wait()  # no network: nothing to try (nor to count as failed)
            self.conn_state = "connecting"
            room = self.tls_room if self.url.startswith("wss:") else None
            if room is not None:  # no transient TLS session while this one connects
                await room.lock.acquire()
            try:
                password = self.cfg.get("AuthorizationKey") or None
                tls = self.ocpp_conf if room is None else room.wrap(None, self.ocpp_conf, self.flash)
                await ws.connect(self.url, "ocpp1.6", self.cp_id, password, tls,
                                 timeout=15, flash=self.flash)
            except Exception as exc:
                if room is not None:
                    room.reserve()  # the attempt's TLS buffers are gone: the hole back
                    room.lock.release()
                failures += 1
                delay = self._backoff(failures)
                self.conn_state = "offline"
                self.log("ocpp: connect failed (%r), retry in %.1fs" % (exc, delay))
                await self._pause(delay)
                continue
            # `failures` counts on until a session gets online: a central system that
            # accepts the upgrade and closes at once still sees growing delays
            self.ws = ws
            if room is not None:
                room.lock.release()
            self.log("ocpp: connected")
            self.conn_state = "connected"
            reader = asyncio.create_task(self._reader(ws))
            try:
                await self._boot(ws)
                if ws.open:
                    self.sent_status = {}
                    self.online.set()
                    self.poke()
                    await self._keepalive(ws)
            except Exception as exc:
                self.log("ocpp: session ended: %r" % (exc,))
            was_online = self.online.is_set()
            self.online.clear()
            self.conn_state = "offline"
            await ws.abort()
            if room is not None:
                room.reserve()  # at once, before anything else lands in the hole
            self._fail_pending()
            try:
                await reader
            except BaseException:
                pass
            self.ws = None
            self.outbox = [m for m in self.outbox if m[0] not in ("StatusNotification", "Heartbeat")]
            self.log("ocpp: disconnected")
            failures = 1 if was_online else failures + 1
            await self._pause(self._backoff(failures))

    async def _pause(self, delay):
        """The reconnect backoff; cut short when Wi-Fi comes back up meanwhile (the
        failures were the network's: the central system is worth a try at once)."""
        wifi = self.wifi
        if wifi is None:
            await asyncio.sleep(delay)
            return
        end = time.ticks_add(time.ticks_ms(), int(delay * 1000))
        was_up = wifi.is_up()
        while time.ticks_diff(end, time.ticks_ms()) > 0:
            await asyncio.sleep_ms(250)
            up = wifi.is_up()
            if up and not was_up:
                return
            was_up = up

    # -- one TLS session at a time -------------------------------------------------------
    async def hold_link(self, url):
        """Before an https transfer: with a TLS room (app.py), take it (one TLS session at
        a time: a wss link steps aside meanwhile); without one, when the OCPP link is TLS
        as well, drop it and keep it down until `release_link()`. True if held (call
        release_link after)."""
        if not url.startswith("https:"):
            return False
        room = self.tls_room
        if room is not None:
            await room.take("an https transfer")
            self.room_taken = True
            return True
        if not self.url.startswith("wss:"):
            return False
        await self.step_aside("an https transfer")
        return True

    def transfer_tls(self, url, flash):
        """The SSL context of one https transfer session (None for http): the central
        system's TLS settings, through the TLS room when there is one (its sessions land in
        the room's hole; call `transfer_done()` after each)."""
        if not url.startswith("https:"):
            return None
        import httpc

        ctx = httpc.tls_context(self.ocpp_conf, flash)
        return ctx if self.tls_room is None else self.tls_room.wrap(ctx)

    def transfer_done(self):
        if self.tls_room is not None:
            self.tls_room.reserve()  # at once: the hole back before anything lands in it

    def release_link(self):
        if self.room_taken:
            self.room_taken = False
            self.tls_room.give()
        else:
            self.come_back()

    async def step_aside(self, what="a TLS session of another uplink"):
        """Let the queued messages go out (at most 10 s), drop a wss link and keep it
        down until `come_back()` (a ws link stays)."""
        if not self.url.startswith("wss:"):
            return
        for _ in range(100):
            if not self.outbox or not self.online.is_set():
                break
            await asyncio.sleep_ms(100)
        self.link_held += 1
        self.log("ocpp: link down during %s (one TLS session at a time)" % what)
        ws = self.ws
        if ws is not None:
            ws.open = False  # ends the session: run() drops the connection
        while self.ws is not None:
            await asyncio.sleep_ms(50)
        gc.collect()

    def come_back(self):
        if self.url.startswith("wss:"):
            self.link_held -= 1

    def boot_payload(self):
        return {"chargePointVendor": "PicoCharge", "chargePointModel": "PicoCharge-W",
                "chargePointSerialNumber": self.cp_id[:25], "firmwareVersion": self.fw_version,
                "meterType": "PicoCharge CT+ZMPT"}

    def on_boot_result(self, res):
        self.on_heartbeat(res)
        if res.get("status") == "Accepted" and res.get("interval", 0) > 0:
            self.cfg.values["HeartbeatInterval"] = res["interval"]

    async def _boot(self, ws):
        if self.accepted_once and self.registration == "Accepted":
            return
        while ws.open:
            try:
                res = await self.call("BootNotification", self.boot_payload(), registered=False)
            except CallError as exc:
                self.log("ocpp: BootNotification refused: %s" % exc.code)
                await asyncio.sleep(30)
                continue
            except asyncio.TimeoutError:
                continue
            self.on_boot_result(res)
            self.registration = res["status"]
            self.log("ocpp: BootNotification %s (interval %s)" % (res["status"], res.get("interval")))
            if self.registration == "Accepted":
                self.accepted_once = True
                if "fw" in self.features:
                    self.feature("fw").on_accepted()
                return
            # the retry interval; a TriggerMessage(BootNotification) ends it (ocpp_trigger)
            self.boot_wake = wake = asyncio.Event()
            try:
                await asyncio.wait_for(wake.wait(), max(1, res.get("interval") or 30))
            except asyncio.TimeoutError:
                pass

    async def _keepalive(self, ws):
        last_ping = time.ticks_ms()
        while ws.open:
            await asyncio.sleep(1)
            if self.wifi is not None and not self.wifi.is_up():
                # a connection across a Wi-Fi outage is seldom worth keeping (a new
                # address, a peer that gave up): made again once Wi-Fi is back
                self.log("ocpp: Wi-Fi down, closing the link")
                break
            now = time.ticks_ms()
            hb = self.cfg.get("HeartbeatInterval")
            if hb and time.ticks_diff(now, self.last_sent_ms) >= hb * 1000 and not self.has_queued("Heartbeat"):
                self.queue("Heartbeat", {}, self.on_heartbeat)
            pi = self.cfg.get("WebSocketPingInterval")
            if pi:
                if time.ticks_diff(now, last_ping) >= pi * 1000:
                    last_ping = now
                    try:  # bounded: a peer that stopped reading leaves the send lock held
                        await asyncio.wait_for(ws.ping(), pi + 10)
                    except Exception:
                        self.log("ocpp: ping not sent, reconnecting")
                        break
                if time.ticks_diff(now, ws.last_rx) > (2 * pi + 10) * 1000:
                    self.log("ocpp: no answer to pings, reconnecting")
                    break

    def on_heartbeat(self, res):
        if "currentTime" in res:
            try:
                self.clock.set(clock_mod.parse_iso(res["currentTime"]), "ocpp")
            except ValueError:
                pass

    # -- RPC -----------------------------------------------------------------------------
    def _fail_pending(self):
        p = self.pending_call
        if p is not None and p[2] is None:
            p[2] = ("lost", None)
            p[1].set()

    async def call(self, action, payload, uid=None, registered=True):
        """Send one CALL and wait for its answer (payload dict). CallError if the central
        system answered CALLERROR, NotConnected, asyncio.TimeoutError."""
        async with self.call_lock:
            ws = self.ws
            if ws is None or not ws.open or (registered and not self.online.is_set()):
                raise NotConnected("not connected")
            if uid is None:
                uid = self.uid()
            box = [uid, asyncio.Event(), None]
            self.pending_call = box
            # an optional observer (the fleet simulator measures CALL -> answer latency)
            observe = getattr(self, "call_observer", None)
            outcome = "timeout"
            t0 = None
            heard = ws.rx_frames
            try:
                await ws.send(ocpp_rpc.call(uid, action, payload))
                self.last_sent_ms = t0 = time.ticks_ms()
                self.calls_out += 1
                try:
                    await asyncio.wait_for(box[1].wait(), self.call_timeout)
                except asyncio.TimeoutError:
                    if ws.rx_frames == heard and ws.open:
                        # not a frame since the CALL went out: the link is dead (a black
                        # hole, a half-open connection); reconnect now rather than after
                        # the ping check's 2 x WebSocketPingInterval + 10 s
                        self.log("ocpp: %s unanswered, nothing heard for %d s: reconnecting" % (
                            action, self.call_timeout))
                        ws.open = False
                    raise
                outcome = "ok" if box[2][0] == ocpp_rpc.CALLRESULT else "error"
            finally:
                self.pending_call = None
                if observe is not None and t0 is not None:
                    observe(action, time.ticks_diff(time.ticks_ms(), t0), outcome)
            kind, body = box[2]
            if kind == "lost":
                raise NotConnected("connection lost")
            if kind == ocpp_rpc.CALLERROR:
                raise CallError(body[0], body[1], body[2])
            if not isinstance(body, dict):
                raise CallError(ocpp_rpc.FORMATION_VIOLATION, "answer is not an object")
            return body

    async def _reader(self, ws):
        try:
            await self._read_loop(ws)
        except Exception as exc:  # e.g. MemoryError: nobody would read this link any more
            self.log("ocpp: reader failed: %r" % (exc,))
        ws.open = False  # ends the session (the link is dropped and made again)
        self._fail_pending()

    async def _read_loop(self, ws):
        while True:
            text = await ws.recv()
            if text is None:
                break
            try:
                kind, uid, action, body = ocpp_rpc.parse(text)
            except CallError as exc:
                self.log("ocpp: bad frame from the central system: %s" % exc.description)
                if exc.details:
                    await self._send(ws, ocpp_rpc.error(exc.details, exc.code, exc.description))
                continue
            if kind == ocpp_rpc.CALL:
                self.calls_in += 1
                try:
                    import ocpp_check  # the CALL handling (dropped again when idle)
                    await ocpp_check.dispatch(self, ws, uid, action, body)
                except Exception as exc:  # e.g. MemoryError loading a feature
                    self.log("ocpp: %s failed: %r" % (action, exc))
                    await self._send(ws, ocpp_rpc.error(uid, ocpp_rpc.INTERNAL_ERROR, "%s failed" % action))
            else:
                p = self.pending_call
                if p is not None and p[0] == uid and p[2] is None:
                    p[2] = (kind, body)
                    p[1].set()
                else:
                    self.log("ocpp: answer to an unknown call %s ignored" % uid)

    async def _send(self, ws, text):
        try:
            await ws.send(text)
        except Exception as exc:
            self.log("ocpp: send failed: %r" % (exc,))
