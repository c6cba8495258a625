"""The transaction side of the charge point (a base class of chargepoint.ChargePoint, split
out so each module compiles in a small heap): authorisation, Start/StopTransaction,
sampled and clock-aligned meter values, connector status, availability, reset, and the
1 s control tick that follows the station."""

import asyncio
import sys

import clock as clock_mod
import connector_state
import journal as journal_mod
from ocpp_rpc import CallError

TX_DATA_MAX = 6
UNITS = {"Energy.Active.Import.Register": "Wh", "Power.Active.Import": "W",
         "Current.Import": "A", "Current.Offered": "A", "Voltage": "V", "Temperature": "Celsius"}


class Transactions:
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
            if self.resv_matches(tag, entry[2]):
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
                if info.get("status") == "Accepted" and self.resv_matches(tag, info.get("parentIdTag")):
                    self._arm(tag, info.get("parentIdTag"))
                else:
                    self.log("ocpp: %s not authorised (%s)" % (tag, info.get("status")))
                return
        # offline
        src, entry = auth.lookup(tag)
        if entry is not None:
            if self.cfg.get("LocalAuthorizeOffline") and auth.accepted_locally(tag) and self.resv_matches(tag, entry[2]):
                self._arm(tag, entry[2])
            else:
                self.log("ocpp: %s refused offline (%s)" % (tag, entry[0]))
        elif self.cfg.get("AllowOfflineTxForUnknownId") and self.resv_matches(tag):
            self._arm(tag, None)
        else:
            self.log("ocpp: %s unknown and offline: refused" % tag)

    def remote_start(self, tag, profile):
        if self.tx is not None or not self.available or self.connector_status() in ("Faulted", "Unavailable"):
            return "Rejected"
        if not self.resv_matches(tag):
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
        r = self.reservation()
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
        r = self.reservation()
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
        self.unload_idle()

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

