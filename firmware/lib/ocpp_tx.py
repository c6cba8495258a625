"""The connector: its transaction, status, meter values and availability, and the control
tick that follows the station. It owns that state (persisted in `ocpp/state.json`) and
its schedule; the features change it through the methods below, never its attributes.

    connector = Connector(cp)
    await connector.run()              # the control tick: every second, or when poked
    connector.tx                       # the running transaction (dict) or None: read only
    connector.available, connector.status(), connector.meter_wh()
    connector.arm(tag, parent)         # authorised: start when an EV is plugged in
    connector.stop_transaction(reason, tag=None)
    connector.started(lid, txid, tag_status)   # the answer to a StartTransaction
    connector.set_availability(operative)      # "Accepted" or "Scheduled"
    connector.begin_reset(kind)        # False if one is under way
    connector.reschedule(key)          # a sampling interval changed
    connector.resend_status(cids=(0, 1))
    connector.meter_values(cid, context, measurands=None, ts=None)   # a MeterValues payload
    connector.reboot(kind)

Persistent state: the running transaction, availability and the highest energy value
reported (meter values stay monotonic even when the station's register, persisted with
bounded wear, comes back a little lower after a power cut). A transaction found there at
boot was cut by a power loss: it is closed with reason PowerLoss (or the reset reason
recorded before a reboot)."""

import sys

import clock as clock_mod
import connector_state
import paging
from ocpp_rpc import CallError


class Connector:
    def __init__(self, cp):
        self.cp = cp
        self.armed = None  # [idTag, parentIdTag, deadline] once authorised, before plug-in
        self.remote_profile = None  # a RemoteStartTransaction's TxProfile, for its transaction
        self.finishing = False  # stopped, the EV still plugged in
        self.fault_stopped = False
        self.status_now = {}  # connector id -> (status, errorCode, info)
        self.sent_status = {}  # what the central system was told
        self.limit_a = -1
        self.next_sample = 0
        self.next_aligned = 0
        self.tx_data = []  # StopTxn*Data samples of the running transaction
        self.resetting = None
        self.scheduled_avail = None
        state = {}
        try:
            state = cp.flash.read_json("ocpp/state.json")
        except (OSError, ValueError):
            pass
        self.available = state.get("avail", True)
        self.floor = int(state.get("floor", 0))
        self.tx = None
        cut = state.get("tx")
        if cut:
            self.tx = cut
            reason = state.get("why") or "PowerLoss"
            cp.log("ocpp: transaction %d was cut (%s), closing it" % (cut["lid"], reason))
            self.stop_transaction(reason)
        elif state.get("why"):
            self.save_state()

    def save_state(self, why=None):
        try:
            self.cp.flash.write_json("ocpp/state.json", {"avail": self.available, "floor": self.floor,
                                                         "tx": self.tx, "why": why})
        except OSError as exc:
            self.cp.log("ocpp: cannot save state: %s" % exc)

    def status(self):
        return self.status_now.get(1, ("Available",))[0]

    def meter_wh(self):
        """The energy register (Wh, int), never below what was already reported."""
        try:
            wh = int(self.cp.station.energy_wh())
        except Exception:
            wh = 0
        if wh > self.floor:
            self.floor = wh
        return self.floor

    # -- what the features ask ------------------------------------------------------------
    def arm(self, tag, parent):
        cp = self.cp
        self.armed = [tag, parent, cp.clock.now() + cp.cfg.get("ConnectionTimeOut")]
        cp.log("ocpp: %s authorised" % tag)
        cp.poke()

    def remote_start(self, profile):
        """A RemoteStartTransaction accepted: its charging profile (or None) is installed
        for the transaction it starts."""
        self.remote_profile = profile

    def set_availability(self, operative):
        if not operative and self.tx is not None:
            self.scheduled_avail = False
            return "Scheduled"
        self.scheduled_avail = None
        self.available = operative
        self.save_state()
        self.cp.poke()
        return "Accepted"

    def begin_reset(self, kind):
        if self.resetting is not None:
            return False
        self.resetting = kind
        return True

    def reschedule(self, key):
        """A sampling interval changed: the next sample is taken on the next tick."""
        if key == "MeterValueSampleInterval":
            self.next_sample = 0
        elif key == "ClockAlignedDataInterval":
            self.next_aligned = 0
        self.cp.poke()

    def resend_status(self, cids=(0, 1)):
        """Tell the central system these connectors' status again (on the next tick)."""
        for c in cids:
            self.sent_status.pop(c, None)
        self.cp.poke()

    def started(self, lid, txid, tag_status):
        """The central system answered StartTransaction `lid`: keep its transactionId; a
        refused idTag stops (StopTransactionOnInvalidId) or suspends the transaction."""
        tx = self.tx
        if tx is None or tx["lid"] != lid:
            return
        tx["txid"] = txid
        if tag_status != "Accepted":
            self.cp.log("ocpp: transaction %s idTag %s" % (txid, tag_status))
            if self.cp.cfg.get("StopTransactionOnInvalidId"):
                self.stop_transaction("DeAuthorized")
                return
            tx["susp"] = True
        self.save_state()

    # -- transactions ---------------------------------------------------------------------
    def _start_transaction(self, tag, parent):
        cp = self.cp
        now = cp.clock.now()
        wh = self.meter_wh()
        resv = cp.reservation()
        lid = cp.journal.add("StartTransaction", paging.load("ocpp_messages").start_transaction(
            tag, wh, clock_mod.iso(now), None if resv is None else resv["id"]), None, cp.link.uid())
        if lid is None:  # the journal cannot persist it (full flash): no transaction
            self.armed = None
            cp.log("ocpp: transaction for %s refused: flash full" % tag)
            cp.poke()
            return
        if resv is not None:
            cp.feature("resv").consume()
        self.tx = {"lid": lid, "tag": tag, "parent": parent, "start": int(now), "wh0": wh,
                   "txid": None, "susp": False}
        self.tx_data = []
        self._tx_sample("Transaction.Begin")
        self.armed = None
        self.finishing = False
        self.fault_stopped = False
        self.next_sample = now + cp.cfg.get("MeterValueSampleInterval")
        self.save_state()
        cp.log("ocpp: transaction #%d started for %s at %d Wh" % (lid, tag, wh))
        if self.remote_profile is not None:
            try:
                smart = cp.feature("smart")
                pr = smart.validate(self.remote_profile, 1)
                pr["tx"] = None
                smart.install(pr)
            except CallError:
                pass
            self.remote_profile = None
        cp.poke()

    def stop_transaction(self, reason, tag=None):
        tx = self.tx
        if tx is None:
            return False
        cp = self.cp
        now = cp.clock.now()
        wh = self.meter_wh()
        self._tx_sample("Transaction.End", now)
        cp.journal.add("StopTransaction", paging.load("ocpp_messages").stop_transaction(
            tx.get("txid") or 0, wh, clock_mod.iso(now), reason, tag, self.tx_data),
            tx["lid"], cp.link.uid())
        self.tx = None
        self.tx_data = []
        try:
            self.finishing = cp.station.plugged()
            cp.station.set_charging_allowed(False)
        except Exception:
            self.finishing = False
        if cp.has_profiles():
            cp.feature("smart").end_transaction()
        if self.scheduled_avail is not None:
            self.available = self.scheduled_avail
            self.scheduled_avail = None
        self.save_state()
        cp.log("ocpp: transaction #%d stopped (%s) at %d Wh" % (tx["lid"], reason, wh))
        cp.poke()
        return True

    def reboot(self, kind):
        cp = self.cp
        if self.tx is not None:
            self.stop_transaction("Reboot")
        cp.log("ocpp: rebooting (%s)" % kind)
        if cp.on_reset is not None:
            cp.on_reset(kind)
        else:
            cp.log("ocpp: no reset handler; not rebooting")
        self.resetting = None

    # -- meter values ---------------------------------------------------------------------
    def meter_values(self, cid, context, measurands=None, ts=None):
        """A MeterValues payload for connector `cid` sampled now (stamped `ts` if given)."""
        cp = self.cp
        if measurands is None:
            measurands = cp.cfg.list("MeterValuesSampledData")
        messages = paging.load("ocpp_messages")
        values = messages.sampled_values(cp.station, self.meter_wh, measurands, context) or \
            messages.sampled_values(cp.station, self.meter_wh, ["Energy.Active.Import.Register"], context)
        tx = self.tx
        return messages.meter_values(
            cid, clock_mod.iso(ts or cp.clock.now()), values,
            tx["txid"] if cid == 1 and tx is not None and tx.get("txid") is not None else None)

    def _tx_sample(self, context, ts=None, aligned=False):
        """A sample for the StopTransaction's transactionData (StopTxn*Data)."""
        ms = self.cp.cfg.list("StopTxnAlignedData" if aligned else "StopTxnSampledData")
        values = paging.load("ocpp_messages").sampled_values(
            self.cp.station, self.meter_wh, ms, context) if ms else None
        if not values:
            return
        d = self.tx_data
        if len(d) >= 6:  # bounded: the first and the latest samples stay
            d.pop(1 if len(d) > 1 else 0)
        d.append({"timestamp": clock_mod.iso(ts or self.cp.clock.now()), "sampledValue": values})

    def _journal_meter_values(self, p):
        """A transaction's MeterValues go through the journal (transactionId filled in
        when it is sent: the StartTransaction may not be answered yet)."""
        p["transactionId"] = 0
        self.cp.journal.add("MeterValues", p, self.tx["lid"], self.cp.link.uid())
        self.save_state()

    # -- the control tick -----------------------------------------------------------------
    async def run(self):
        """The control tick: every second, or when poked. Each step reads the station
        afresh; a failing step is logged and the tick goes on next time."""
        cp = self.cp
        wake = cp.wake
        while True:
            try:
                now = cp.clock.now()
                plugged = cp.station.plugged()
                self._expire_authorisation(now)
                self._follow_station(plugged)
                self._apply_limit()
                self._sample_periodic(now)
                self._sample_aligned(now)
                self._report_status(now)
                cp.features.unload_idle()
            except Exception as exc:
                cp.log("ocpp: tick failed: %r" % (exc,))
                sys.print_exception(exc)
            wake.clear()
            await wake.wait()  # poke() or the 1 s beat (ChargePoint._pacer)

    def _expire_authorisation(self, now):
        armed = self.armed
        if armed is not None and now > armed[2]:
            self.cp.log("ocpp: %s authorised but no EV plugged in within ConnectionTimeOut" % armed[0])
            self.armed = None

    def _follow_station(self, plugged):
        """Start an armed transaction when an EV is plugged in; stop one when it leaves or
        the station faults; let the relay close only while a transaction charges."""
        st = self.cp.station
        if self.tx is None:
            if not plugged:
                self.finishing = False
            armed = self.armed
            if armed is not None and plugged and self.available and not self.finishing \
                    and not st.faults() and self.resetting is None:
                self._start_transaction(armed[0], armed[1])
        elif not plugged and self.cp.cfg.get("StopTransactionOnEVSideDisconnect"):
            self.stop_transaction("EVDisconnected")
        elif st.faults() and not self.fault_stopped:
            self.fault_stopped = True
            self.stop_transaction("EmergencyStop")
        tx = self.tx
        st.set_charging_allowed(tx is not None and not tx.get("susp") and plugged)

    def _apply_limit(self):
        """The smart-charging limit of now onto the station."""
        cp = self.cp
        limit = cp.feature("smart").limit_now() if cp.has_profiles() else None
        if limit != self.limit_a:
            self.limit_a = limit
            cp.station.set_limit_a(limit)
            cp.log("ocpp: charging limit %s A" % limit)

    def _sample_periodic(self, now):
        interval = self.cp.cfg.get("MeterValueSampleInterval")
        if self.tx is not None and interval and now >= self.next_sample:
            self.next_sample = now + interval
            self._journal_meter_values(self.meter_values(1, "Sample.Periodic"))
            self._tx_sample("Sample.Periodic")

    def _sample_aligned(self, now):
        """Clock-aligned meter values (ClockAlignedDataInterval): in the journal during a
        transaction, else in the outbox while online."""
        cp = self.cp
        aligned = cp.cfg.get("ClockAlignedDataInterval")
        if not aligned:
            return
        boundary = int(now) - int(now) % aligned
        if self.next_aligned == 0:
            self.next_aligned = boundary + aligned
            return
        if now < self.next_aligned:
            return
        ts = self.next_aligned
        self.next_aligned = boundary + aligned
        ms = cp.cfg.list("MeterValuesAlignedData")
        if ms:
            p = self.meter_values(1, "Sample.Clock", ms, ts)
            if self.tx is not None:
                self._journal_meter_values(p)
            elif cp.link.online.is_set():
                cp.outbox.add("MeterValues", p)
        if self.tx is not None:
            self._tx_sample("Sample.Clock", ts, True)

    def _report_status(self, now):
        """Derive both connectors' status (0: the charge point) and queue a
        StatusNotification for each one that changed while online."""
        cp = self.cp
        st = cp.station
        sn = self.status_now
        faults = st.faults()
        full = None
        if cp.journal.full and not cp.journal.recover(now):
            full = ("OtherError", "flash full: journal")  # no new transactions
            sn[0] = ("Faulted",) + full
        else:
            sn[0] = ("Available" if self.available else "Unavailable", "NoError", None)
        if full and self.tx is None and not faults:
            faults = [full]
        reserved = cp.reservation() is not None
        sn[1] = connector_state.derive(st.pilot_state(), st.relay_closed(), self.tx is not None,
                                       self.finishing, self.armed is not None, self.available,
                                       reserved, faults, st.offered_a())
        if reserved and sn[1][0] in ("Faulted", "Unavailable"):
            cp.feature("resv").end(sn[1][0])  # a reservation ends there
        for cid in (0, 1) if cp.link.online.is_set() else ():
            cur = sn[cid]
            if self.sent_status.get(cid) != cur:
                self.sent_status[cid] = cur
                cp.outbox.add_status(cid, paging.load("ocpp_messages").status_notification(cid, cur, cp.clock.iso()))
