"""Local mode: the connector's logic when config.json has no `ocpp` section.

A charger without a central system is what a home user has, so:

- `local.free_vend` (default true): plugging in authorises by itself; the connector goes
  Preparing -> Charging without a card. This is what a user of a standalone box expects.
- `local.free_vend: false`: plugging in shows Preparing until someone authorises at the
  REPL (`ev.start("TAG")`) or a card reader calls `local_start(id_tag)`.
- `ev.stop()` ends the session: the pilot stops offering, the contactor opens, the
  connector shows Finishing until the cable is pulled, then Available.
- Unplugging ends the session (reason EVDisconnected).

Sessions are appended to `sessions.log` on flash (bounded, rotated like the log).
Same calls as the OCPP ChargePoint (`run`, `local_start`, `local_stop`, `pending`,
`summary`), so `ev` and the app do not care which one runs.
"""

import asyncio
import time

import connector_state

AUTH_TIMEOUT_MS = 120000  # an authorisation without a cable expires (OCPP ConnectionTimeOut)


class LocalPoint:
    def __init__(self, config, station, flash, clock, log=print):
        section = config.get("local") if isinstance(config.get("local"), dict) else {}
        self.free_vend = section.get("free_vend", True)
        self.station = station
        self.flash = flash
        self.clock = clock
        self.log = log
        self.authorized = None  # id tag waiting for a cable
        self.auth_ms = None
        self.tx = None  # {"id_tag", "start", "wh0"}
        self.tx_stopping = False
        self.available = True
        self.status = None  # the first derived status is logged (as a boot notification)
        self.error_code = "NoError"
        self.info = None
        self.sessions = 0
        self.last_session = None
        self._candidate = None
        self._candidate_ms = 0
        self.settle_ms = section.get("settle_ms", 400)

    def local_start(self, id_tag="LOCAL"):
        if self.tx is not None:
            return False
        self.authorized = id_tag
        self.auth_ms = time.ticks_ms()
        self.tx_stopping = False
        self.log("local: %s authorised" % id_tag)
        self.step()
        return True

    def local_stop(self, reason="Local"):
        if self.tx is None:
            self.authorized = None
            return False
        self._end(reason)
        self.step()
        return True

    def pending(self):
        return []

    def summary(self):
        tx = self.tx
        return {
            "mode": "local (free vend)" if self.free_vend else "local",
            "status": self.status,
            "error_code": self.error_code,
            "info": self.info,
            "transaction": None if tx is None else {
                "id_tag": tx["id_tag"], "start": tx["start"],
                "wh": round(self.station.energy_wh() - tx["wh0"], 3)},
            "limit_a": self.station.limit_a(),
            "sessions": self.sessions,
        }

    def _begin(self, id_tag):
        st = self.station
        self.tx = {"id_tag": id_tag, "start": self.clock.iso(), "wh0": st.energy_wh()}
        self.authorized = None
        self.tx_stopping = False
        st.set_charging_allowed(True)
        self.log("local: session started for %s at %.3f Wh" % (id_tag, st.energy_wh()))

    def _end(self, reason):
        st = self.station
        st.set_charging_allowed(False)
        tx = self.tx
        self.tx = None
        self.tx_stopping = True
        wh = st.energy_wh() - tx["wh0"]
        self.sessions += 1
        self.last_session = (tx["id_tag"], round(wh, 3), reason)
        self.log("local: session ended (%s), %.3f Wh" % (reason, wh))
        line = '{"id_tag": "%s", "start": "%s", "stop": "%s", "wh": %.3f, "reason": "%s"}\n' % (
            tx["id_tag"], tx["start"], self.clock.iso(), wh, reason)
        try:
            if self.flash.size("sessions.log") > 8192:
                self.flash.remove("sessions.1.log")
                self.flash.rename("sessions.log", "sessions.1.log")
            self.flash.append("sessions.log", line.encode())
        except OSError:
            pass

    def step(self):
        """Advance the session logic and derive the connector status."""
        st = self.station
        plugged = st.plugged()
        if self.tx is None:
            if plugged and not self.tx_stopping and not st.faults():
                if self.authorized is not None:
                    self._begin(self.authorized)
                elif self.free_vend:
                    self._begin("FREEVEND")
            if self.authorized is not None and time.ticks_diff(time.ticks_ms(), self.auth_ms) > AUTH_TIMEOUT_MS:
                self.log("local: authorisation of %s expired" % self.authorized)
                self.authorized = None
        elif not plugged:
            self._end("EVDisconnected")
        if not plugged and self.tx is None:
            self.tx_stopping = False
        status, code, info = connector_state.derive(
            st.pilot_state(), st.relay_closed(), self.tx is not None, self.tx_stopping,
            self.authorized is not None, self.available, False, st.faults(), st.offered_a())
        # a new status is reported once it held for `local.settle_ms` (the EV needs a moment
        # to answer the PWM, the station a cycle to re-offer after a fault clears: no
        # Preparing -> SuspendedEV -> Charging flicker); faults at once
        candidate = (status, code)
        now = time.ticks_ms()
        if candidate != self._candidate:
            self._candidate = candidate
            self._candidate_ms = now
        if (status != "Faulted" and self.status is not None
                and time.ticks_diff(now, self._candidate_ms) < self.settle_ms):
            return
        if status != self.status or code != self.error_code:
            self.status = status
            self.error_code = code
            self.info = info
            if code != "NoError":
                self.log("status: %s %s (%s)" % (status, code, info))
            else:
                self.log("status: " + status)

    async def run(self):
        while True:
            self.step()
            await asyncio.sleep_ms(100)
