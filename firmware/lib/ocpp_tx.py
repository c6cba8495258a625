"""The transaction side of the charge point (a base class of chargepoint.ChargePoint, split
out so each module compiles in a small heap): Start/StopTransaction, sampled and
clock-aligned meter values, connector status, reboot, and the 1 s control tick that
follows the station. Authorisation lives in ocpp_localauth, the central system's
RemoteStart/Stop, Reset and ChangeAvailability in ocpp_core (both loaded on demand)."""

import sys

import clock as clock_mod
import connector_state
from ocpp_rpc import CallError


class Transactions:
    # -- authorisation and transactions ----------------------------------------------------
    def local_start(self, id_tag):
        """A card presented (or `ev.start`): authorise, or stop our own transaction."""
        return self.feature("auth").local_start(id_tag)

    def local_stop(self, reason="Local"):
        return self.stop_transaction(reason, self.tx["tag"] if self.tx else None)

    def arm(self, tag, parent):
        self.armed = [tag, parent, self.clock.now() + self.cfg.get("ConnectionTimeOut")]
        self.log("ocpp: %s authorised" % tag)
        self.poke()

    def _start_transaction(self, tag, parent):
        now = self.clock.now()
        wh = self.meter_wh()
        payload = {"connectorId": 1, "idTag": tag, "meterStart": wh,
                   "timestamp": clock_mod.iso(now)}
        resv = self.reservation()
        if resv is not None:
            payload["reservationId"] = resv["id"]
        lid = self.journal.add("StartTransaction", payload, None, self.uid())
        if lid is None:  # the journal cannot persist it (full flash): no transaction
            self.armed = None
            self.log("ocpp: transaction for %s refused: flash full" % tag)
            self.poke()
            return
        if resv is not None:
            self.feature("resv").consume()
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
                smart = self.feature("smart")
                pr = smart.validate(self.remote_profile, 1)
                pr["tx"] = None
                smart.install(pr)
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
        self.journal.add("StopTransaction", payload, tx["lid"], self.uid())
        self.tx = None
        self.tx_data = []
        try:
            self.finishing = self.station.plugged()
            self.station.set_charging_allowed(False)
        except Exception:
            self.finishing = False
        if self.has_profiles():
            self.feature("smart").end_transaction()
        if self.scheduled_avail is not None:
            self.available = self.scheduled_avail
            self.scheduled_avail = None
        self.save_state()
        self.log("ocpp: transaction #%d stopped (%s) at %d Wh" % (tx["lid"], reason, wh))
        self.poke()
        return True

    # -- meter values --------------------------------------------------------------------
    def sampled(self, measurands, context):
        st = self.station
        out = []
        for m in measurands:
            loc = "Outlet"
            try:
                if m == "Energy.Active.Import.Register":
                    v = "%d" % self.meter_wh()
                    u = "Wh"
                else:
                    if m == "Power.Active.Import":
                        v = st.power_w()
                        u = "W"
                    elif m == "Current.Import":
                        v = st.current_a()
                        u = "A"
                    elif m == "Current.Offered":
                        v = st.offered_a()
                        u = "A"
                        loc = None
                    elif m == "Voltage":
                        v = st.voltage_v()
                        u = "V"
                    else:
                        v = st.temperature_c()
                        u = "Celsius"
                        loc = "Body"
                    if v is not None:
                        v = "%.1f" % v
            except Exception:
                v = None
            if v is None:
                continue
            sv = {"value": v, "context": context, "measurand": m, "unit": u}
            if loc:
                sv["location"] = loc
            out.append(sv)
        return out

    def meter_values_payload(self, cid, context, measurands=None, ts=None):
        if measurands is None:
            measurands = self.cfg.list("MeterValuesSampledData")
        values = self.sampled(measurands, context) or self.sampled(["Energy.Active.Import.Register"], context)
        p = {"connectorId": cid, "meterValue": [{"timestamp": clock_mod.iso(ts or self.clock.now()),
                                                 "sampledValue": values}]}
        tx = self.tx
        if cid == 1 and tx is not None and tx.get("txid") is not None:
            p["transactionId"] = tx["txid"]
        return p

    def _tx_sample(self, context, ts=None, aligned=False):
        ms = self.cfg.list("StopTxnAlignedData" if aligned else "StopTxnSampledData")
        values = self.sampled(ms, context) if ms else None
        if not values:
            return
        d = self.tx_data
        if len(d) >= 6:  # bounded: the first and the latest samples stay
            d.pop(1 if len(d) > 1 else 0)
        d.append({"timestamp": clock_mod.iso(ts or self.clock.now()), "sampledValue": values})

    # -- status, control tick ----------------------------------------------------------
    def connector_status(self):
        return self.status_now.get(1, ("Available",))[0]

    def reboot(self, kind):
        if self.tx is not None:
            self.stop_transaction("Reboot")
        self.log("ocpp: rebooting (%s)" % kind)
        if self.on_reset is not None:
            self.on_reset(kind)
        else:
            self.log("ocpp: no reset handler; not rebooting")
        self.resetting = None

    async def _tick_loop(self):
        """The control tick: every second, or when poked."""
        while True:
            try:
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
                limit = self.feature("smart").limit_now() if self.has_profiles() else None
                if limit != self.limit_a:
                    self.limit_a = limit
                    st.set_limit_a(limit)
                    self.log("ocpp: charging limit %s A" % limit)
                # meter values: sampled (journaled) and clock-aligned
                tx = self.tx
                cfg = self.cfg
                interval = cfg.get("MeterValueSampleInterval")
                if tx is not None and interval and now >= self.next_sample:
                    self.next_sample = now + interval
                    p = self.meter_values_payload(1, "Sample.Periodic")
                    p["transactionId"] = 0
                    self.journal.add("MeterValues", p, tx["lid"], self.uid())
                    self._tx_sample("Sample.Periodic")
                    self.save_state()
                aligned = cfg.get("ClockAlignedDataInterval")
                if aligned:
                    boundary = int(now) - int(now) % aligned
                    if self.next_aligned == 0:
                        self.next_aligned = boundary + aligned
                    elif now >= self.next_aligned:
                        ts = self.next_aligned
                        self.next_aligned = boundary + aligned
                        ms = cfg.list("MeterValuesAlignedData")
                        if ms:
                            p = self.meter_values_payload(1, "Sample.Clock", ms, ts)
                            if tx is not None:
                                p["transactionId"] = 0
                                self.journal.add("MeterValues", p, tx["lid"], self.uid())
                                self.save_state()
                            elif self.online.is_set():
                                self.queue("MeterValues", p)
                        if tx is not None:
                            self._tx_sample("Sample.Clock", ts, True)
                # connector status (sent when it changed)
                st = self.station
                sn = self.status_now
                faults = st.faults()
                full = None
                if self.journal.full and not self.journal.recover(now):
                    full = ("OtherError", "flash full: journal")  # no new transactions
                    sn[0] = ("Faulted",) + full
                else:
                    sn[0] = ("Available" if self.available else "Unavailable", "NoError", None)
                if full and self.tx is None and not faults:
                    faults = [full]
                reserved = self.reservation() is not None
                sn[1] = connector_state.derive(st.pilot_state(), st.relay_closed(), self.tx is not None,
                                               self.finishing, self.armed is not None, self.available,
                                               reserved, faults, st.offered_a())
                if reserved and sn[1][0] in ("Faulted", "Unavailable"):
                    self.feature("resv").end(sn[1][0])  # a reservation ends there
                for cid in (0, 1) if self.online.is_set() else ():
                    cur = sn[cid]
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
                self.unload_idle()
            except Exception as exc:
                self.log("ocpp: tick failed: %r" % (exc,))
                sys.print_exception(exc)
            self.wake.clear()
            await self.wake.wait()  # poke() or the pacer's 1 s beat (chargepoint._pacer)
