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
import journal as journal_mod
import ocpp_config
import ocpp_link
import ocpp_tx
from micropython import const
from ocpp_rpc import CallError

_OUTBOX_MAX = const(8)
_EVENTS_MAX = const(16)  # recent OCPP events for GetDiagnostics (the log file has all)
_AUTH_IDLE_MS = const(1000)


def module_of(name):
    """The module of a feature (loaded when first needed, dropped when idle: code paging;
    feature code is most of the charge point's heap on a board); each defines `Feature`."""
    return "ocpp_" + {"auth": "localauth", "resv": "reservation", "fw": "firmware"}.get(name, name)


class ChargePoint(ocpp_link.Link, ocpp_tx.Transactions):
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
        self.cfg = ocpp_config.Config(flash, ocpp, self.log)
        self.journal = journal_mod.Journal(flash, self.log,
                                           max_records=int(ocpp.get("journal_max", 120)))
        self.features = {}
        # does a feature's state file exist (asked every tick while its module is not
        # loaded; only the loaded module changes the file, so unload() forgets this)
        self.stored = {}
        self.fw_version = "1.0.0"
        try:
            self.fw_version = flash.read_json("fw/version.json")["version"]
        except (OSError, ValueError, KeyError):
            pass
        if (config.get("firmware") or {}).get("allow_unsigned") is True:
            self.log("firmware: WARNING firmware.allow_unsigned is on: unsigned bundles get installed")
        if flash.exists("fw/install.json"):
            self.feature("fw")  # an update on trial, or one to roll back
        self.call_timeout = int(ocpp.get("call_timeout_s", 30))
        self.backoff_min = float(ocpp.get("reconnect_min_s", 1))
        self.ping_grace = float(ocpp.get("ping_grace_s", 10))
        self.ws = None
        self.ws_obj = None
        self.wifi = None  # the board's Wi-Fi (app.py sets it): the link follows it
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
        """The feature object, its module imported on first use. Only the features that
        hold live state (profiles, a reservation, a firmware job) stay loaded; others are
        dropped before another one is loaded: code paging for a small heap."""
        entry = self.features.get(name)
        if entry is None:
            self.unload_idle(0, name)
            mod = module_of(name)
            try:
                module = __import__(mod)
            except MemoryError:
                if mod in sys.modules:
                    del sys.modules[mod]
                gc.collect()
                module = __import__(mod)
            entry = [module.Feature(self), 0]
            self.features[name] = entry
        entry[1] = time.ticks_ms()
        return entry[0]

    def pinned(self, name):
        if name == "smart":
            return self.flash.exists("ocpp/profiles.json")
        if name == "resv":
            return self.flash.exists("ocpp/reservation.json")
        return name == "fw"  # released by release_fw

    def unload_idle(self, idle_ms=60000, keep=None):
        """Drop feature code not used for a while (the heap of a board is small)."""
        now = time.ticks_ms()
        dropped = False
        for name in list(self.features):
            if name == keep or self.pinned(name):
                continue
            # local auth holds its list and cache while loaded (they live on flash): it
            # leaves after a second idle, the others after idle_ms
            if time.ticks_diff(now, self.features[name][1]) >= (
                    _AUTH_IDLE_MS if name == "auth" and idle_ms > _AUTH_IDLE_MS else idle_ms):
                self.unload(name, False)
                dropped = True
        for mod in ("ocpp_check", "ocpp_info") if idle_ms else ():  # transient helpers
            if mod in sys.modules:
                del sys.modules[mod]
                dropped = True
        if dropped or idle_ms == 0:
            gc.collect()

    def resv_matches(self, tag, parent=None):
        return self.reservation() is None or self.feature("resv").matches(tag, parent)

    def reservation(self):
        """The active reservation or None (without loading the module when none exists)."""
        if "resv" not in self.features and not self._stored("ocpp/reservation.json"):
            return None
        return self.feature("resv").active()

    def _stored(self, path):
        known = self.stored.get(path)
        if known is None:
            known = self.stored[path] = self.flash.exists(path)
        return known

    def unload(self, name, collect=True):
        if name in self.features:
            del self.features[name]
            self.stored.clear()
            mod = module_of(name)
            if mod in sys.modules:
                del sys.modules[mod]
            if collect:
                gc.collect()

    def fw_state(self, diag=False):
        f = self.features.get("fw")
        if f is None:
            return "Idle"
        f = f[0]
        return f.diag_status if diag else f.status

    def has_profiles(self):
        return "smart" in self.features or self._stored("ocpp/profiles.json")

    def log(self, text):
        if len(self.events) >= _EVENTS_MAX:
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

    # -- outbox and journal ---------------------------------------------------------------
    def queue(self, action, payload, on_result=None, barrier=False):
        """Queue a non-transaction message (bounded; the oldest is dropped when full)."""
        if len(self.outbox) >= _OUTBOX_MAX:
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
        import ocpp_info
        return ocpp_info.pending(self)

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
                    if m[0] != "Heartbeat" and len(self.outbox) < _OUTBOX_MAX:
                        self.outbox.insert(0, m)
                    await asyncio.sleep(1)
                continue
            rec = self.journal.head()
            if rec is not None:
                await self._deliver(rec)
                continue
            self.send_wake.clear()
            await self.send_wake.wait()  # poke() or the pacer's beat

    async def _pacer(self):
        """The 1 s beat of the control tick and the sender (both also wake on poke()):
        one sleep per second instead of a timed wait in each (a wait_for builds a task
        and a timeout every time; with thousands of charge points in the simulator
        that was a tenth of its time)."""
        while True:
            await asyncio.sleep(1)
            self.wake.set()
            self.send_wake.set()

    async def _deliver(self, rec):
        j = self.journal
        payload = j.payload_for_send(rec)
        if payload is None:
            j.give_up(rec, ": its StartTransaction never got a transactionId")
            return
        try:
            res = await self.call(rec["a"], payload, uid=rec["id"])
        except asyncio.TimeoutError:
            # no answer is not a "failure to process" (OCPP 1.6 3.7.1: that is a CALLERROR):
            # the message may not even have arrived, so it is not an attempt used up (a
            # long outage would otherwise drop a StopTransaction); sent again, same id
            self.log("ocpp: %s #%d not answered, sending it again" % (rec["a"], rec["s"]))
            await asyncio.sleep(1)
            return
        except CallError as exc:
            rec["n"] += 1
            what = exc.code
            if rec["n"] >= self.cfg.get("TransactionMessageAttempts"):
                j.give_up(rec, " after %d attempts (%s)" % (rec["n"], what))
                return
            j.update(rec)
            self.log("ocpp: %s #%d attempt %d failed (%s)" % (rec["a"], rec["s"], rec["n"], what))
            await asyncio.sleep(self.cfg.get("TransactionMessageRetryInterval") * rec["n"])
            return
        except OSError:
            await asyncio.sleep(1)
            return
        if rec["a"] != "MeterValues":  # transaction ids, idTagInfo: ocpp_localauth
            self.feature("auth").answered(rec, res)
        j.remove(rec["s"])

    def summary(self):
        """dict: connection state, registration, status, transaction, limit (ocpp_info)."""
        import ocpp_info
        return ocpp_info.summary(self)
