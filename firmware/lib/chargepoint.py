"""The OCPP 1.6-J charge point: one connector, all six feature profiles.

    cp = ChargePoint(config, station, flash, clock, log=print, on_reset=None)
    await cp.run()            # connect, BootNotification, serve, reconnect, forever

Tasks (all on the board's event loop, none blocking it):
- the connection loop: WebSocket (ocpp_ws) with exponential backoff and jitter,
  BootNotification until Accepted (Pending answers the central system's calls, Rejected
  answers nothing), heartbeats and WebSocket pings while connected;
- the reader: routes CALLRESULT/CALLERROR to the one outstanding CALL and answers the
  central system's CALLs (validated by `ocpp_rpc.check`, handled by the feature modules
  ocpp_core, ocpp_localauth, ocpp_reservation, ocpp_smart, ocpp_trigger, ocpp_firmware);
- the sender: non-transaction messages from a bounded outbox, then the transaction
  journal (journal.py) in order, one CALL at a time;
- the control tick (1 s, or when poked): transaction start/stop from the station's view,
  status changes, sampled and clock-aligned meter values, the smart-charging limit.

Persistent state (`ocpp/state.json`): the running transaction, availability and the
highest energy value reported (so meter values stay monotonic even when the station's
register, persisted with bounded wear, comes back a little lower after a power cut).
A transaction found there at boot was cut by a power loss: it is closed with reason
PowerLoss (or the reset reason recorded before a reboot).
"""

import asyncio
import gc
import random
import sys
import time

import clock as clock_mod
import connector_state
import journal as journal_mod
import ocpp_core
import ocpp_localauth
import ocpp_reservation
import ocpp_rpc
import ocpp_ws
from ocpp_rpc import CallError

OUTBOX_MAX = 8
EVENTS_MAX = 40
TX_DATA_MAX = 6
# Actions OCPP 1.6 knows that this charge point does not take as a CALL.
KNOWN_ACTIONS = ("Authorize", "BootNotification", "DiagnosticsStatusNotification",
                 "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StartTransaction",
                 "StatusNotification", "StopTransaction", "CertificateSigned",
                 "DeleteCertificate", "ExtendedTriggerMessage", "GetInstalledCertificateIds",
                 "GetLog", "InstallCertificate", "SignedUpdateFirmware")
# Feature modules loaded when first needed (and the firmware one unloaded after use):
# their code is most of the charge point's heap on a board.
FEATURES = {"smart": ("ocpp_smart", "SmartCharging"), "trigger": ("ocpp_trigger", "Trigger"),
            "fw": ("ocpp_firmware", "Firmware")}
ROUTES = {"SetChargingProfile": "smart", "ClearChargingProfile": "smart",
          "GetCompositeSchedule": "smart", "TriggerMessage": "trigger",
          "UpdateFirmware": "fw", "GetDiagnostics": "fw"}
UNITS = {"Energy.Active.Import.Register": "Wh", "Power.Active.Import": "W",
         "Current.Import": "A", "Current.Offered": "A", "Voltage": "V", "Temperature": "Celsius"}


class NotConnected(OSError):
    pass


class ChargePoint:
    def __init__(self, config, station, flash, clock, log=print, on_reset=None):
        ocpp = config.get("ocpp") or {}
        self.config = config
        self.ocpp_conf = ocpp
        self.cp_id = config["cp_id"]
        self.url = ocpp["url"].rstrip("/") + "/" + self.cp_id
        self.station = station
        self.flash = flash
        self.clock = clock
        self._log = log
        self.on_reset = on_reset
        self.events = []
        flash.makedirs("ocpp")
        self.cfg = ocpp_core.Config(flash, ocpp, self.log)
        self.journal = journal_mod.Journal(flash, self.log,
                                           max_records=int(ocpp.get("journal_max", 120)))
        self.core = ocpp_core.Core(self)
        self.auth = ocpp_localauth.LocalAuth(self)
        self.resv = ocpp_reservation.Reservation(self)
        self.features = {}
        self.fw_version = "1.0.0"
        try:
            self.fw_version = flash.read_json("fw/version.json")["version"]
        except (OSError, ValueError, KeyError):
            pass
        if flash.exists("fw/install.json"):
            self.feature("fw")  # an update on trial, or one to roll back
        self.call_timeout = int(ocpp.get("call_timeout_s", 30))
        self.backoff_min = float(ocpp.get("reconnect_min_s", 1))
        self.ws = None
        self.conn_state = "offline"
        self.registration = None
        self.accepted_once = False
        self.online = asyncio.Event()
        self.wake = asyncio.Event()
        self.send_wake = asyncio.Event()
        self.call_lock = asyncio.Lock()
        self.pending_call = None
        self.outbox = []
        self.boot_token = "%08x" % random.getrandbits(32)
        self.counter = 0
        self.last_sent_ms = time.ticks_ms()
        self.armed = None  # [idTag, parentIdTag, deadline] once authorised, before plug-in
        self.remote_profile = None
        self.finishing = False
        self.sent_status = {}
        self.status_now = {}
        self.limit_a = -1
        self.next_sample = 0
        self.next_aligned = 0
        self.tx_data = []
        self.resetting = None
        self.scheduled_avail = None
        self.fault_stopped = False
        self.calls_in = 0
        self.calls_out = 0
        # persistent state
        state = {}
        try:
            state = flash.read_json("ocpp/state.json")
        except (OSError, ValueError):
            pass
        self.available = state.get("avail", True)
        self.floor = int(state.get("floor", 0))
        self.tx = None
        cut = state.get("tx")
        if cut:
            self.tx = cut
            reason = state.get("why") or "PowerLoss"
            self.log("ocpp: transaction %d was cut (%s), closing it" % (cut["lid"], reason))
            self.stop_transaction(reason)
        elif state.get("why"):
            self.save_state()

    # -- small helpers -------------------------------------------------------------------
    def feature(self, name):
        f = self.features.get(name)
        if f is None:
            mod, cls = FEATURES[name]
            f = getattr(__import__(mod), cls)(self)
            self.features[name] = f
        return f

    def unload(self, name):
        if name in self.features:
            del self.features[name]
            mod = FEATURES[name][0]
            if mod in sys.modules:
                del sys.modules[mod]
            gc.collect()

    def release_fw(self):
        """Unload the firmware-management code once nothing is going on."""
        f = self.features.get("fw")
        if f is not None and not f.busy and not f.diag_busy and f.trial is None and not f.announce:
            self.unload("fw")

    @property
    def smart(self):
        return self.feature("smart")

    @property
    def fw(self):
        return self.feature("fw")

    def fw_state(self, diag=False):
        f = self.features.get("fw")
        if f is None:
            return "Idle"
        return f.diag_status if diag else f.status

    def has_profiles(self):
        return "smart" in self.features or self.flash.exists("ocpp/profiles.json")

    def log(self, text):
        if len(self.events) >= EVENTS_MAX:
            self.events.pop(0)
        self.events.append("%s %s" % (clock_mod.iso(self.clock.now()), text))
        self._log(text)

    def poke(self):
        self.wake.set()
        self.send_wake.set()

    def uid(self):
        self.counter += 1
        return "%s-%d" % (self.boot_token, self.counter)

    def save_state(self, why=None):
        try:
            self.flash.write_json("ocpp/state.json", {"avail": self.available, "floor": self.floor,
                                                      "tx": self.tx, "why": why})
        except OSError as exc:
            self.log("ocpp: cannot save state: %s" % exc)

    def meter_wh(self):
        """The energy register (Wh, int), never below what was already reported."""
        try:
            wh = int(self.station.energy_wh())
        except Exception:
            wh = 0
        if wh > self.floor:
            self.floor = wh
        return self.floor

    def max_current_a(self):
        return float(self.config.get("limits", {}).get("max_current_a", 32))

    # -- connection ------------------------------------------------------------------------
    def _ssl_ctx(self):
        if not self.url.startswith("wss://"):
            return None
        import httpc
        cadata = None
        ca = self.ocpp_conf.get("ca_file")
        if ca:
            cadata = self.flash.read_bytes(ca)
        return httpc.ssl_context(cadata)

    def _backoff(self, failures):
        top = min(float(self.cfg.get("ReconnectMaxInterval")), self.backoff_min * (2 ** min(failures, 10)))
        return top * (0.5 + random.getrandbits(16) / 131072)

    async def run(self):
        self.log("ocpp: charge point %s -> %s" % (self.cp_id, self.url))
        asyncio.create_task(self._tick_loop())
        asyncio.create_task(self._sender())
        fw = self.features.get("fw")
        if fw is not None and fw.needs_reboot:
            self.reboot("Hard")
        if fw is not None and fw.trial is not None:
            asyncio.create_task(fw.trial_watch())
        failures = 0
        while True:
            ws = ocpp_ws.WebSocket(max_size=int(self.ocpp_conf.get("max_message", 8192)))
            self.conn_state = "connecting"
            try:
                password = self.cfg.get("AuthorizationKey") or None
                await ws.connect(self.url, "ocpp1.6", self.cp_id, password, self._ssl_ctx(),
                                 timeout=15)
            except Exception as exc:
                failures += 1
                delay = self._backoff(failures)
                self.conn_state = "offline"
                self.log("ocpp: connect failed (%r), retry in %.1fs" % (exc, delay))
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.log("ocpp: connected")
            self.ws = ws
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
            self.online.clear()
            self.conn_state = "offline"
            await ws.abort()
            self._fail_pending()
            try:
                await reader
            except BaseException:
                pass
            self.ws = None
            self.outbox = [m for m in self.outbox if m[0] not in ("StatusNotification", "Heartbeat")]
            self.log("ocpp: disconnected")
            failures += 1
            await asyncio.sleep(self._backoff(failures))

    def boot_payload(self):
        return {"chargePointVendor": "PicoCharge", "chargePointModel": "PicoCharge-W",
                "chargePointSerialNumber": self.cp_id[:25], "firmwareVersion": self.fw_version,
                "meterType": "PicoCharge CT+ZMPT"}

    def on_boot_result(self, res):
        if "currentTime" in res:
            self._set_time(res["currentTime"])
        if res.get("status") == "Accepted" and res.get("interval", 0) > 0:
            self.cfg.values["HeartbeatInterval"] = res["interval"]

    def _set_time(self, text):
        try:
            self.clock.set(clock_mod.parse_iso(text), "ocpp")
        except ValueError:
            pass

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
                    self.fw.on_accepted()
                return
            await asyncio.sleep(max(1, res.get("interval") or 30))

    async def _keepalive(self, ws):
        last_ping = time.ticks_ms()
        while ws.open:
            await asyncio.sleep(1)
            now = time.ticks_ms()
            hb = self.cfg.get("HeartbeatInterval")
            if hb and time.ticks_diff(now, self.last_sent_ms) >= hb * 1000 and not self.has_queued("Heartbeat"):
                self.queue("Heartbeat", {}, self.on_heartbeat)
            pi = self.cfg.get("WebSocketPingInterval")
            if pi:
                if time.ticks_diff(now, last_ping) >= pi * 1000:
                    last_ping = now
                    try:
                        await ws.ping()
                    except Exception:
                        break
                if time.ticks_diff(now, ws.last_rx) > (2 * pi + 10) * 1000:
                    self.log("ocpp: no answer to pings, reconnecting")
                    break

    def on_heartbeat(self, res):
        if "currentTime" in res:
            self._set_time(res["currentTime"])

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
            try:
                await ws.send(ocpp_rpc.call(uid, action, payload))
                self.last_sent_ms = time.ticks_ms()
                self.calls_out += 1
                await asyncio.wait_for(box[1].wait(), self.call_timeout)
            finally:
                self.pending_call = None
            kind, body = box[2]
            if kind == "lost":
                raise NotConnected("connection lost")
            if kind == ocpp_rpc.CALLERROR:
                raise CallError(body[0], body[1], body[2])
            if not isinstance(body, dict):
                raise CallError(ocpp_rpc.FORMATION_VIOLATION, "answer is not an object")
            return body

    async def _reader(self, ws):
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
                await self._dispatch(ws, uid, action, body)
            else:
                p = self.pending_call
                if p is not None and p[0] == uid and p[2] is None:
                    p[2] = (kind, body)
                    p[1].set()
                else:
                    self.log("ocpp: answer to an unknown call %s ignored" % uid)
        self._fail_pending()

    async def _send(self, ws, text):
        try:
            await ws.send(text)
        except Exception as exc:
            self.log("ocpp: send failed: %r" % (exc,))

    async def _dispatch(self, ws, uid, action, body):
        if self.registration == "Rejected":
            return  # a rejected charge point does not answer the central system
        feature = None
        if action in ROUTES:
            feature = self.feature(ROUTES[action])
        else:
            for f in (self.core, self.auth, self.resv):
                if action in f.HANDLERS:
                    feature = f
        if feature is None:
            code = ocpp_rpc.NOT_SUPPORTED if action in KNOWN_ACTIONS else ocpp_rpc.NOT_IMPLEMENTED
            await self._send(ws, ocpp_rpc.error(uid, code, "%s is not handled here" % action))
            return
        meth, spec = feature.HANDLERS[action]
        try:
            ocpp_rpc.check(body, spec)
            res = getattr(feature, meth)(body)
            text = ocpp_rpc.result(uid, res)
        except CallError as exc:
            text = ocpp_rpc.error(uid, exc.code, exc.description)
        except Exception as exc:
            self.log("ocpp: %s failed: %r" % (action, exc))
            sys.print_exception(exc)
            text = ocpp_rpc.error(uid, ocpp_rpc.INTERNAL_ERROR, "%s failed" % action)
        self.log("ocpp: %s -> %s" % (action, text[:80]))
        await self._send(ws, text)
        self.poke()

    # -- outbox and journal ---------------------------------------------------------------
    def queue(self, action, payload, on_result=None, barrier=False):
        """Queue a non-transaction message (bounded; the oldest is dropped when full)."""
        if len(self.outbox) >= OUTBOX_MAX:
            self.outbox.pop(0)
        self.outbox.append([action, payload, on_result,
                            self.journal.next_seq - 1 if barrier else 0])
        self.poke()

    def has_queued(self, action):
        for m in self.outbox:
            if m[0] == action:
                return True
        return False

    def pending(self):
        """What waits to be sent: ["<action> #<seq>", ...] (journal first, then outbox)."""
        out = []
        for seq in self.journal.seqs[:20]:
            try:
                out.append("%s #%d" % (self.journal.read(seq)["a"], seq))
            except (OSError, ValueError):
                pass
        for rec in self.journal.ram:
            out.append("%s #%d (RAM)" % (rec["a"], rec["s"]))
        for m in self.outbox:
            out.append(m[0])
        return out

    def _next_outbox(self):
        head = self.journal.seqs[0] if self.journal.seqs else None
        for m in self.outbox:
            if m[3] and head is not None and head <= m[3]:
                continue  # wait for the transaction messages queued before it
            return m
        return None

    async def _sender(self):
        while True:
            if not self.online.is_set():
                await self.online.wait()
            m = self._next_outbox()
            if m is not None:
                self.outbox.remove(m)
                try:
                    res = await self.call(m[0], m[1])
                    if m[2] is not None:
                        m[2](res)
                except CallError as exc:
                    self.log("ocpp: %s answered %s" % (m[0], exc.code))
                    if m[2] is not None:
                        m[2](None)
                except (OSError, asyncio.TimeoutError):
                    if m[0] != "Heartbeat" and len(self.outbox) < OUTBOX_MAX:
                        self.outbox.insert(0, m)
                    await asyncio.sleep(1)
                continue
            rec = self.journal.head()
            if rec is not None:
                await self._deliver(rec)
                continue
            self.send_wake.clear()
            try:
                await asyncio.wait_for(self.send_wake.wait(), 1)
            except asyncio.TimeoutError:
                pass

    async def _deliver(self, rec):
        j = self.journal
        payload = j.payload_for_send(rec)
        if payload is None:
            self.log("ocpp: %s #%d dropped: its StartTransaction never got a transactionId" % (rec["a"], rec["s"]))
            j.remove(rec["s"])
            return
        try:
            res = await self.call(rec["a"], payload, uid=rec["id"])
        except (CallError, asyncio.TimeoutError) as exc:
            rec["n"] += 1
            what = exc.code if isinstance(exc, CallError) else "timeout"
            if rec["n"] >= self.cfg.get("TransactionMessageAttempts"):
                self.log("ocpp: %s #%d dropped after %d attempts (%s)" % (rec["a"], rec["s"], rec["n"], what))
                j.remove(rec["s"])
                return
            j.update(rec)
            self.log("ocpp: %s #%d attempt %d failed (%s)" % (rec["a"], rec["s"], rec["n"], what))
            await asyncio.sleep(self.cfg.get("TransactionMessageRetryInterval") * rec["n"])
            return
        except OSError:
            await asyncio.sleep(1)
            return
        lid = rec["l"]
        if rec["a"] == journal_mod.START:
            txid = res.get("transactionId")
            if isinstance(txid, int):
                j.set_txid(lid, txid)
            tx = self.tx
            if tx is not None and tx["lid"] == lid:
                tx["txid"] = txid
                self.save_state()
            info = res.get("idTagInfo") or {}
            self.auth.remember(rec["p"]["idTag"], info)
            if info.get("status") != "Accepted" and tx is not None and tx["lid"] == lid:
                self.log("ocpp: transaction %s idTag %s" % (txid, info.get("status")))
                if self.cfg.get("StopTransactionOnInvalidId"):
                    self.stop_transaction("DeAuthorized")
                else:
                    tx["susp"] = True
                    self.save_state()
        elif rec["a"] == journal_mod.STOP:
            j.forget_tx(lid)
            if "idTagInfo" in res and "idTag" in rec["p"]:
                self.auth.remember(rec["p"]["idTag"], res["idTagInfo"])
        j.remove(rec["s"])

    # -- authorisation and transactions ----------------------------------------------------
    def local_start(self, id_tag):
        """A card presented (or `ev.start`): authorise, or stop our own transaction."""
        tx = self.tx
        if tx is not None:
            if id_tag == tx["tag"] or (tx.get("parent") and self.auth.lookup(id_tag)[1] and
                                       self.auth.lookup(id_tag)[1][2] == tx["parent"]):
                self.stop_transaction("Local", id_tag)
                return "stopping"
            return "busy"
        asyncio.create_task(self._authorize(id_tag))
        return "authorizing"

    def local_stop(self, reason="Local"):
        return self.stop_transaction(reason, self.tx["tag"] if self.tx else None)

    def _arm(self, tag, parent):
        self.armed = [tag, parent, self.clock.now() + self.cfg.get("ConnectionTimeOut")]
        self.log("ocpp: %s authorised" % tag)
        self.poke()

    async def _authorize(self, tag, remote=False):
        auth = self.auth
        if auth.lookup(tag)[1] is not None and self.cfg.get("LocalPreAuthorize") and auth.accepted_locally(tag):
            entry = auth.lookup(tag)[1]
            if self.resv.matches(tag, entry[2]):
                self._arm(tag, entry[2])
            return
        if self.online.is_set():
            try:
                res = await self.call("Authorize", {"idTag": tag})
            except (CallError, OSError, asyncio.TimeoutError) as exc:
                res = None
                self.log("ocpp: Authorize failed: %r" % (exc,))
            if res is not None:
                info = res.get("idTagInfo") or {}
                auth.remember(tag, info)
                if info.get("status") == "Accepted" and self.resv.matches(tag, info.get("parentIdTag")):
                    self._arm(tag, info.get("parentIdTag"))
                else:
                    self.log("ocpp: %s not authorised (%s)" % (tag, info.get("status")))
                return
        # offline
        src, entry = auth.lookup(tag)
        if entry is not None:
            if self.cfg.get("LocalAuthorizeOffline") and auth.accepted_locally(tag) and self.resv.matches(tag, entry[2]):
                self._arm(tag, entry[2])
            else:
                self.log("ocpp: %s refused offline (%s)" % (tag, entry[0]))
        elif self.cfg.get("AllowOfflineTxForUnknownId") and self.resv.matches(tag):
            self._arm(tag, None)
        else:
            self.log("ocpp: %s unknown and offline: refused" % tag)

    def remote_start(self, tag, profile):
        if self.tx is not None or not self.available or self.connector_status() in ("Faulted", "Unavailable"):
            return "Rejected"
        if not self.resv.matches(tag):
            return "Rejected"
        self.remote_profile = profile
        if self.cfg.get("AuthorizeRemoteTxRequests"):
            asyncio.create_task(self._authorize(tag, True))
        else:
            self._arm(tag, None)
        return "Accepted"

    def remote_stop(self, txid):
        tx = self.tx
        if tx is None or tx.get("txid") != txid:
            return "Rejected"
        self.stop_transaction("Remote")
        return "Accepted"

    def _start_transaction(self, tag, parent):
        now = self.clock.now()
        wh = self.meter_wh()
        payload = {"connectorId": 1, "idTag": tag, "meterStart": wh,
                   "timestamp": clock_mod.iso(now)}
        r = self.resv.active()
        if r is not None:
            payload["reservationId"] = self.resv.consume()
        lid = self.journal.add(journal_mod.START, payload, None, self.uid())
        self.tx = {"lid": lid, "tag": tag, "parent": parent, "start": int(now), "wh0": wh,
                   "txid": None, "susp": False}
        self.tx_data = []
        self._tx_sample("Transaction.Begin")
        self.armed = None
        self.finishing = False
        self.fault_stopped = False
        self.next_sample = now + self.cfg.get("MeterValueSampleInterval")
        self.save_state()
        self.log("ocpp: transaction #%d started for %s at %d Wh" % (lid, tag, wh))
        if self.remote_profile is not None:
            try:
                pr = self.smart.validate(self.remote_profile, 1)
                pr["tx"] = None
                self.smart.install(pr)
            except CallError:
                pass
            self.remote_profile = None
        self.poke()

    def stop_transaction(self, reason, tag=None):
        tx = self.tx
        if tx is None:
            return False
        now = self.clock.now()
        wh = self.meter_wh()
        payload = {"transactionId": tx.get("txid") or 0, "meterStop": wh,
                   "timestamp": clock_mod.iso(now), "reason": reason}
        if tag:
            payload["idTag"] = tag
        self._tx_sample("Transaction.End", now)
        if self.tx_data:
            payload["transactionData"] = self.tx_data
        self.journal.add(journal_mod.STOP, payload, tx["lid"], self.uid())
        self.tx = None
        self.tx_data = []
        try:
            self.finishing = self.station.plugged()
            self.station.set_charging_allowed(False)
        except Exception:
            self.finishing = False
        if self.has_profiles():
            self.smart.end_transaction()
        if self.scheduled_avail is not None:
            self.available = self.scheduled_avail
            self.scheduled_avail = None
        self.save_state()
        self.log("ocpp: transaction #%d stopped (%s) at %d Wh" % (tx["lid"], reason, wh))
        self.poke()
        return True

    # -- meter values --------------------------------------------------------------------
    def _reading(self, measurand):
        st = self.station
        try:
            if measurand == "Energy.Active.Import.Register":
                return "%d" % self.meter_wh()
            if measurand == "Power.Active.Import":
                v = st.power_w()
            elif measurand == "Current.Import":
                v = st.current_a()
            elif measurand == "Current.Offered":
                v = st.offered_a()
            elif measurand == "Voltage":
                v = st.voltage_v()
            else:
                v = st.temperature_c()
        except Exception:
            return None
        return None if v is None else "%.1f" % v

    def sampled(self, measurands, context):
        out = []
        for m in measurands:
            value = self._reading(m)
            if value is None:
                continue
            sv = {"value": value, "context": context, "measurand": m, "unit": UNITS[m]}
            if m == "Temperature":
                sv["location"] = "Body"
            elif m != "Current.Offered":
                sv["location"] = "Outlet"
            out.append(sv)
        return out

    def meter_values_payload(self, cid, context, measurands=None, ts=None):
        if measurands is None:
            measurands = self.cfg.list("MeterValuesSampledData")
        values = self.sampled(measurands, context)
        if not values:
            values = self.sampled(["Energy.Active.Import.Register"], context)
        p = {"connectorId": cid, "meterValue": [{"timestamp": clock_mod.iso(ts or self.clock.now()),
                                                 "sampledValue": values}]}
        tx = self.tx
        if cid == 1 and tx is not None and tx.get("txid") is not None:
            p["transactionId"] = tx["txid"]
        return p

    def _tx_sample(self, context, ts=None, aligned=False):
        key = "StopTxnAlignedData" if aligned else "StopTxnSampledData"
        ms = self.cfg.list(key)
        if not ms:
            return
        values = self.sampled(ms, context)
        if not values:
            return
        if len(self.tx_data) >= TX_DATA_MAX:
            self.tx_data.pop(1 if len(self.tx_data) > 1 else 0)
        self.tx_data.append({"timestamp": clock_mod.iso(ts or self.clock.now()), "sampledValue": values})

    def _meter_tick(self, now):
        tx = self.tx
        interval = self.cfg.get("MeterValueSampleInterval")
        if tx is not None and interval and now >= self.next_sample:
            self.next_sample = now + interval
            p = self.meter_values_payload(1, "Sample.Periodic")
            p.pop("transactionId", None)
            p["transactionId"] = 0
            self.journal.add(journal_mod.METER, p, tx["lid"], self.uid())
            self._tx_sample("Sample.Periodic")
            self.save_state()
        aligned = self.cfg.get("ClockAlignedDataInterval")
        if aligned:
            boundary = int(now) - int(now) % aligned
            if self.next_aligned == 0:
                self.next_aligned = boundary + aligned
            elif now >= self.next_aligned:
                ts = self.next_aligned
                self.next_aligned = boundary + aligned
                ms = self.cfg.list("MeterValuesAlignedData")
                if ms:
                    p = self.meter_values_payload(1, "Sample.Clock", ms, ts)
                    if tx is not None:
                        p["transactionId"] = 0
                        self.journal.add(journal_mod.METER, p, tx["lid"], self.uid())
                        self.save_state()
                    elif self.online.is_set():
                        self.queue("MeterValues", p)
                if tx is not None:
                    self._tx_sample("Sample.Clock", ts, True)

    # -- status, availability, control tick ----------------------------------------------
    def connector_status(self):
        return self.status_now.get(1, ("Available",))[0]

    def _derive(self):
        st = self.station
        pilot = st.pilot_state()
        faults = st.faults()
        r = self.resv.active()
        return connector_state.derive(pilot, st.relay_closed(), self.tx is not None,
                                      self.finishing, self.armed is not None, self.available,
                                      r is not None, faults, st.offered_a())

    def resend_status(self, cid):
        if cid in self.sent_status:
            del self.sent_status[cid]
        self.poke()

    def _status_tick(self):
        s1 = self._derive()
        s0 = ("Available" if self.available else "Unavailable", "NoError", None)
        self.status_now[0] = s0
        self.status_now[1] = s1
        if not self.online.is_set():
            return
        for cid in (0, 1):
            cur = self.status_now[cid]
            if self.sent_status.get(cid) != cur:
                self.sent_status[cid] = cur
                p = {"connectorId": cid, "status": cur[0], "errorCode": cur[1],
                     "timestamp": self.clock.iso()}
                if cur[2]:
                    p["info"] = str(cur[2])[:50]
                for m in self.outbox:  # a newer status replaces a queued one
                    if m[0] == "StatusNotification" and m[1]["connectorId"] == cid:
                        self.outbox.remove(m)
                        break
                self.queue("StatusNotification", p, None, True)

    def change_availability(self, operative):
        if not operative and self.tx is not None:
            self.scheduled_avail = False
            return "Scheduled"
        self.scheduled_avail = None
        self.available = operative
        self.save_state()
        self.poke()
        return "Accepted"

    def config_changed(self, key):
        if key in ("MeterValueSampleInterval",):
            self.next_sample = 0
        if key == "ClockAlignedDataInterval":
            self.next_aligned = 0
        self.poke()

    def request_reset(self, kind):
        if self.resetting is None:
            self.resetting = kind
            asyncio.create_task(self._reset(kind))

    async def _reset(self, kind):
        await asyncio.sleep_ms(200)  # the answer to Reset goes out first
        if self.tx is not None:
            self.stop_transaction("HardReset" if kind == "Hard" else "SoftReset")
        for _ in range(100 if kind == "Soft" else 30):
            if not len(self.journal) and not self.outbox:
                break
            await asyncio.sleep_ms(100)
        self.reboot(kind)

    def reboot(self, kind):
        if self.tx is not None:
            self.stop_transaction("Reboot")
        self.log("ocpp: rebooting (%s)" % kind)
        if self.on_reset is not None:
            self.on_reset(kind)
        else:
            self.log("ocpp: no reset handler; not rebooting")
        self.resetting = None

    def _tick(self):
        st = self.station
        now = self.clock.now()
        plugged = st.plugged()
        armed = self.armed
        if armed is not None and now > armed[2]:
            self.log("ocpp: %s authorised but no EV plugged in within ConnectionTimeOut" % armed[0])
            self.armed = None
        tx = self.tx
        if tx is None:
            if not plugged:
                self.finishing = False
            armed = self.armed
            if armed is not None and plugged and self.available and not self.finishing \
                    and not st.faults() and self.resetting is None:
                self._start_transaction(armed[0], armed[1])
        else:
            if not plugged and self.cfg.get("StopTransactionOnEVSideDisconnect"):
                self.stop_transaction("EVDisconnected")
            elif st.faults():
                if not self.fault_stopped:
                    self.fault_stopped = True
                    self.stop_transaction("EmergencyStop")
        tx = self.tx
        allow = tx is not None and not tx.get("susp") and plugged
        st.set_charging_allowed(allow)
        limit = self.smart.limit_now() if self.has_profiles() else None
        if limit != self.limit_a:
            self.limit_a = limit
            st.set_limit_a(limit)
            self.log("ocpp: charging limit %s A" % limit)
        self._meter_tick(now)
        self._status_tick()

    async def _tick_loop(self):
        while True:
            try:
                self._tick()
            except Exception as exc:
                self.log("ocpp: tick failed: %r" % (exc,))
                sys.print_exception(exc)
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), 1)
            except asyncio.TimeoutError:
                pass

    def summary(self):
        tx = self.tx
        return {"connection": self.conn_state, "registration": self.registration,
                "status": self.connector_status(), "available": self.available,
                "transaction": None if tx is None else {"id": tx.get("txid"), "local": tx["lid"],
                                                        "idTag": tx["tag"], "meterStart": tx["wh0"]},
                "limit_a": None if self.limit_a == -1 else self.limit_a,
                "queued": len(self.journal) + len(self.outbox), "journal_dropped": self.journal.dropped,
                "journal_degraded": self.journal.degraded, "firmware": self.fw_version,
                "firmware_status": self.fw_state()}
