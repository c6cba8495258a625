"""The link to the central system: the WebSocket connection with backoff and jitter,
BootNotification until Accepted (ocpp_boot, loaded for it), heartbeats and pings, the one
outstanding CALL (`call`), and reading what the central system sends: answers go to the outstanding CALL, its own
CALLs to ocpp_check.dispatch (paged), which hands them to the features.

    link = Link(cp)       # cp: the ChargePoint (its log, clock, cfg, outbox, connector)
    await link.run()      # connect, register, keep alive, reconnect: forever
    await link.call(action, payload)    # CallError, NotConnected, asyncio.TimeoutError
    link.online (an asyncio.Event), link.state, link.registration
    ocpp_boot.end_wait(link)  # a TriggerMessage(BootNotification) while Pending
    await link.hold(url) / link.release()   # one TLS session at a time (below)

One TLS session at a time: a Pico W's heap holds one mbedTLS session (about 23 KB held,
more during the handshake) next to the running board, not two (docs/firmware.md, "Heap").
An https transfer (firmware download, diagnostics upload) takes the link down while it
runs when the link is wss:// itself (`hold` / `release`)."""

import asyncio
import gc
import random
import time

import clock as clock_mod
import ocpp_rpc
import ocpp_ws
import paging
from ocpp_rpc import CallError

REGISTRATIONS = ("Accepted", "Pending", "Rejected")  # BootNotification.conf statuses
HEAP_TRIES = 4  # handshakes of one connection that may meet ENOMEM before it counts as failed


class NotConnected(OSError):
    pass


class Link:
    def __init__(self, cp):
        conf = cp.ocpp_conf
        self.cp = cp
        self.url = conf["url"].rstrip("/") + "/" + cp.cp_id
        self.call_timeout = int(conf.get("call_timeout_s", 30))
        self.backoff_min = float(conf.get("reconnect_min_s", 1))
        self.ping_grace = float(conf.get("ping_grace_s", 10))  # past 2 x WebSocketPingInterval
        self.ws = None  # the WebSocket while a session runs
        self.ws_obj = None  # allocated once: its buffers are reused across reconnects
        self.state = "offline"  # "connecting", "connected"
        self.registration = None  # the last BootNotification status
        self.accepted_once = False
        self.online = asyncio.Event()  # registered and open: the outbox may send
        self.boot_wake = None  # ocpp_boot's, while it waits to send BootNotification again
        self.held = 0  # https transfers that asked for the TLS link to stay down
        self.call_lock = asyncio.Lock()
        self.pending_call = None  # [uid, Event, (kind, body) once answered]
        self.boot_token = "%08x" % random.getrandbits(32)
        self.counter = 0
        self.last_sent_ms = time.ticks_ms()
        self.calls_in = 0
        self.calls_out = 0
        self.call_observer = None  # the fleet simulator measures CALL -> answer latency

    # -- connection ------------------------------------------------------------------------
    def _backoff(self, failures):
        top = min(float(self.cp.cfg.get("ReconnectMaxInterval")), self.backoff_min * (2 ** min(failures, 10)))
        return top * (0.5 + random.getrandbits(16) / 131072)

    async def run(self):
        cp = self.cp
        conf = cp.ocpp_conf
        cp.log("ocpp: charge point %s -> %s" % (cp.cp_id, self.url))
        if self.url.startswith("wss:") and conf.get("ca_file") is None:
            cp.log("ocpp: WARNING TLS certificate NOT checked (\"insecure\": true)"
                   if conf.get("insecure") is True else
                   "ocpp: wss:// without ocpp.ca_file: refusing to connect (set \"insecure\": true to skip the check)")
        failures = 0
        heap_tries = 0
        while True:
            ws = self.ws_obj
            if ws is None:
                ws = self.ws_obj = ocpp_ws.WebSocket(max_size=int(conf.get("max_message", 4096)))
            while self.held:
                await asyncio.sleep_ms(200)
            wifi = cp.wifi
            if wifi is not None and not wifi.is_up():
                self.state = "offline"
                await wifi.event.wait()  # no network: nothing to try (nor to count as failed)
            self.state = "connecting"
            try:
                password = cp.cfg.get("AuthorizationKey") or None
                await ws.connect(self.url, "ocpp1.6", cp.cp_id, password, conf,
                                 timeout=15, flash=cp.flash)
            except Exception as exc:
                self.state = "offline"
                if heap_tries < HEAP_TRIES - 1 and isinstance(exc, OSError) and exc.args \
                        and exc.args[0] == 12:
                    # ENOMEM (mbedTLS): no hole for the session's buffers in that moment's
                    # heap. Right after a firmware download the per-second objects of other
                    # tasks can split the hole the download's sessions left for a few
                    # seconds (fresh-clone CI: three handshakes in 2.5 s); they are replaced
                    # within a second, so: collect, pause (0.5, 1, 2 s), try again, without
                    # counting it as a failure of the central system
                    pause = 500 << heap_tries
                    heap_tries += 1
                    cp.log("ocpp: no heap for the TLS session (OSError 12): collecting, "
                           "trying it again in %.1fs" % (pause / 1000))
                    gc.collect()
                    await asyncio.sleep_ms(pause)
                    gc.collect()
                    continue
                heap_tries = 0
                failures += 1
                delay = self._backoff(failures)
                cp.log("ocpp: connect failed (%r), retry in %.1fs" % (exc, delay))
                await self._pause(delay)
                continue
            heap_tries = 0
            # `failures` counts on until a session gets online: a central system that
            # accepts the upgrade and closes at once still sees growing delays
            cp.log("ocpp: connected")
            self.ws = ws
            self.state = "connected"
            reader = asyncio.create_task(self._reader(ws))
            try:
                if not (self.accepted_once and self.registration == "Accepted"):
                    try:  # the registration code: on the heap only while registering
                        await paging.load("ocpp_boot").register(self, ws)
                    finally:
                        paging.drop("ocpp_boot")
                if ws.open:
                    cp.connector.resend_status()
                    self.online.set()
                    cp.poke()
                    await self._keepalive(ws)
            except Exception as exc:
                cp.log("ocpp: session ended: %r" % (exc,))
            was_online = self.online.is_set()
            self.online.clear()
            self.state = "offline"
            await ws.abort()
            self._fail_pending()
            try:
                await reader
            except Exception:  # (a cancellation of this task itself goes on: shutdown)
                pass
            self.ws = None
            cp.outbox.drop_stale()
            cp.log("ocpp: disconnected")
            failures = 1 if was_online else failures + 1
            await self._pause(self._backoff(failures))

    async def _pause(self, delay):
        """The reconnect backoff; cut short when Wi-Fi comes back up meanwhile (the
        failures were the network's: the central system is worth a try at once)."""
        wifi = self.cp.wifi
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
    async def hold(self, url):
        """Before an https transfer: when the OCPP link is TLS as well, let the queued
        messages go out (at most 10 s), drop the link and keep it down until
        `release()`. True if the link is held (call release after)."""
        if not (url.startswith("https:") and self.url.startswith("wss:")):
            return False
        for _ in range(100):
            if not self.cp.outbox.items or not self.online.is_set():
                break
            await asyncio.sleep_ms(100)
        self.held += 1
        self.cp.log("ocpp: link down during an https transfer (one TLS session at a time)")
        ws = self.ws
        if ws is not None:
            ws.open = False  # ends the session: run() drops the connection
        while self.ws is not None:
            await asyncio.sleep_ms(50)
        gc.collect()
        return True

    def release(self):
        self.held -= 1

    # -- keep-alive (registration: ocpp_boot) ----------------------------------------------
    async def _keepalive(self, ws):
        cp = self.cp
        last_ping = time.ticks_ms()
        while ws.open:
            await asyncio.sleep(1)
            if cp.wifi is not None and not cp.wifi.is_up():
                # a connection across a Wi-Fi outage is seldom worth keeping (a new
                # address, a peer that gave up): made again once Wi-Fi is back
                cp.log("ocpp: Wi-Fi down, closing the link")
                break
            now = time.ticks_ms()
            hb = cp.cfg.get("HeartbeatInterval")
            if hb and time.ticks_diff(now, self.last_sent_ms) >= hb * 1000 and not cp.outbox.has("Heartbeat"):
                cp.outbox.add("Heartbeat", {}, self.on_heartbeat)
            pi = cp.cfg.get("WebSocketPingInterval")
            if pi:
                if time.ticks_diff(now, last_ping) >= pi * 1000:
                    last_ping = now
                    try:  # bounded: a peer that stopped reading leaves the send lock held
                        await asyncio.wait_for(ws.ping(), pi + self.ping_grace)
                    except Exception:
                        cp.log("ocpp: ping not sent, reconnecting")
                        break
                if time.ticks_diff(now, ws.last_rx) > (2 * pi + self.ping_grace) * 1000:
                    cp.log("ocpp: no answer to pings, reconnecting")
                    break

    def on_heartbeat(self, res):
        """The central system's time (None: a CALLERROR answered the Heartbeat)."""
        if res and "currentTime" in res:
            try:
                self.cp.clock.set(clock_mod.parse_iso(res["currentTime"]), "ocpp")
            except ValueError:
                pass

    # -- RPC: our CALLs ------------------------------------------------------------------
    def uid(self):
        """A unique message id: this boot's random token and a counter."""
        self.counter += 1
        return "%s-%d" % (self.boot_token, self.counter)

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
            # [uid, answered, (kind, body), the registration call's action]
            box = [uid, asyncio.Event(), None, None if registered else action]
            self.pending_call = box
            observe = self.call_observer
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
                        self.cp.log("ocpp: %s unanswered, nothing heard for %d s: reconnecting" % (
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

    # -- what the central system sends -----------------------------------------------------
    async def _reader(self, ws):
        try:
            await self._read_loop(ws)
        except Exception as exc:  # e.g. MemoryError: nobody would read this link any more
            self.cp.log("ocpp: reader failed: %r" % (exc,))
        ws.open = False  # ends the session (the link is dropped and made again)
        self._fail_pending()

    async def _read_loop(self, ws):
        cp = self.cp
        while True:
            text = await ws.recv()
            if text is None:
                break
            try:
                kind, uid, action, body = ocpp_rpc.parse(text)
            except CallError as exc:
                cp.log("ocpp: bad frame from the central system: %s" % exc.description)
                if exc.details:
                    await self.send(ws, ocpp_rpc.error(exc.details, exc.code, exc.description))
                continue
            if kind == ocpp_rpc.CALL:
                self.calls_in += 1
                try:
                    # the CALL handling (paged: dropped again when idle)
                    await paging.load("ocpp_check").dispatch(cp, ws, uid, action, body)
                except Exception as exc:  # e.g. MemoryError loading a feature
                    cp.log("ocpp: %s failed: %r" % (action, exc))
                    await self.send(ws, ocpp_rpc.error(uid, ocpp_rpc.INTERNAL_ERROR, "%s failed" % action))
            else:
                p = self.pending_call
                if p is not None and p[0] == uid and p[2] is None:
                    p[2] = (kind, body)
                    p[1].set()
                    if p[3] == "BootNotification" and kind == ocpp_rpc.CALLRESULT and \
                            isinstance(body, dict) and body.get("status") in REGISTRATIONS:
                        # at once: a CALL that follows the answer on the wire is read
                        # before the registration resumes, and must see this status
                        self.registration = body["status"]
                else:
                    cp.log("ocpp: answer to an unknown call %s ignored" % uid)

    async def send(self, ws, text):
        """Send an answer (CALLRESULT / CALLERROR); a failure is logged, not raised."""
        try:
            await ws.send(text)
        except Exception as exc:
            self.cp.log("ocpp: send failed: %r" % (exc,))
