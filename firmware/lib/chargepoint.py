"""The OCPP 1.6-J charge point: one connector, all six feature profiles.

    cp = ChargePoint(config, station, flash, clock, log=print, on_reset=None)
    await cp.run()            # connect, BootNotification, serve, reconnect, forever

It is built from components, each owning its state; read them in the order a message
travels:
- `cp.link` (ocpp_link.Link): the WebSocket connection with backoff, BootNotification,
  heartbeats and pings, the one outstanding CALL, and reading what the central system
  sends (its CALLs go to ocpp_check.dispatch, then to a feature);
- the features (ocpp_core, ocpp_localauth, ocpp_reservation, ocpp_smart, ocpp_trigger,
  ocpp_firmware): `cp.feature(name)`, loaded on demand and dropped when idle (paging.py,
  with the rule that nothing holds one across an `await`);
- `cp.connector` (ocpp_tx.Connector): the transaction, status, meter values and
  availability, and the 1 s control tick that follows the station;
- `cp.outbox` (ocpp_outbox.Outbox): what the charge point sends, one CALL at a time: a
  small RAM queue, then the transaction journal (`cp.journal`, journal.py) in order;
- `cp.cfg` (ocpp_config.Config): the configuration keys; ocpp_messages builds every
  outgoing payload.

The charge point itself holds what all of them share (identity, station, flash, clock,
the event log) and answers the board (app.py, the console): `local_start`, `local_stop`,
`summary`, `pending`, `connector_status`.
"""

import asyncio

import clock as clock_mod
import journal as journal_mod
import ocpp_config
import ocpp_link
import ocpp_outbox
import ocpp_tx
import paging
from micropython import const

_EVENTS_MAX = const(16)  # recent OCPP events for GetDiagnostics (the log file has all)


class ChargePoint:
    def __init__(self, config, station, flash, clock, log=print, on_reset=None):
        ocpp = config.get("ocpp") or {}
        self.config = config
        self.ocpp_conf = ocpp
        self.cp_id = config["cp_id"]
        self.station = station
        self.flash = flash
        self.clock = clock
        self._log = log
        self.on_reset = on_reset
        self.events = []
        self.wifi = None  # the board's Wi-Fi (app.py sets it): the link follows it
        self.wake = asyncio.Event()  # the control tick's: poke() and the 1 s beat
        flash.makedirs("ocpp")
        self.fw_version = "1.0.0"
        try:
            self.fw_version = flash.read_json("fw/version.json")["version"]
        except (OSError, ValueError, KeyError):
            pass
        if (config.get("firmware") or {}).get("allow_unsigned") is True:
            self.log("firmware: WARNING firmware.allow_unsigned is on: unsigned bundles get installed")
        self.cfg = ocpp_config.Config(flash, ocpp, self.log)
        self.journal = journal_mod.Journal(flash, self.log,
                                           max_records=int(ocpp.get("journal_max", 120)))
        self.features = paging.Features(self)
        self.feature = self.features.get
        if flash.exists("fw/install.json"):
            self.feature("fw")  # an update on trial, or one to roll back
        self.link = ocpp_link.Link(self)
        self.outbox = ocpp_outbox.Outbox(self)
        self.connector = ocpp_tx.Connector(self)  # may close a transaction a power cut left
        self.connector_status = self.connector.status  # (the board's name for it)

    async def run(self):
        asyncio.create_task(self.connector.run())
        asyncio.create_task(self.outbox.run())
        asyncio.create_task(self._pacer())
        fw = self.features.peek("fw")
        if fw is not None and fw.needs_reboot:
            self.connector.reboot("Hard")
        if fw is not None and fw.trial is not None:
            asyncio.create_task(fw.trial_watch())
        fw = None  # paging's rule: not held across the await below
        await self.link.run()

    async def _pacer(self):
        """The 1 s beat of the control tick and the sender (both also wake on poke()):
        one sleep per second instead of a timed wait in each (a wait_for builds a task
        and a timeout every time; with thousands of charge points in the simulator
        that was a tenth of its time)."""
        while True:
            await asyncio.sleep(1)
            self.poke()

    def poke(self):
        """Something changed: run the control tick and the sender now."""
        self.wake.set()
        self.outbox.wake.set()

    def log(self, text):
        if len(self.events) >= _EVENTS_MAX:
            self.events.pop(0)
        self.events.append("%s %s" % (clock_mod.iso(self.clock.now()), text))
        self._log(text)

    # -- feature state, asked without loading the feature ----------------------------------
    def reservation(self):
        """The active reservation or None (without loading the module when none exists)."""
        if self.features.peek("resv") is None and not self.features.has_state("ocpp/reservation.json"):
            return None
        return self.feature("resv").active()

    def resv_matches(self, tag, parent=None):
        return self.reservation() is None or self.feature("resv").matches(tag, parent)

    def has_profiles(self):
        return self.features.peek("smart") is not None or self.features.has_state("ocpp/profiles.json")

    def fw_state(self, diag=False):
        f = self.features.peek("fw")
        if f is None:
            return "Idle"
        return f.diag_status if diag else f.status

    # -- the board's side (app.py, the console, diagnostics) -------------------------------
    def local_start(self, id_tag):
        """A card presented (or `ev.start`): authorise, or stop our own transaction."""
        return self.feature("auth").local_start(id_tag)

    def local_stop(self, reason="Local"):
        tx = self.connector.tx
        return self.connector.stop_transaction(reason, tx["tag"] if tx else None)

    def pending(self):
        """What waits to be sent: ["<action> #<seq>", ...] (journal first, then outbox)."""
        return paging.load("ocpp_info").pending(self)

    def summary(self):
        """dict: connection state, registration, status, transaction, limit (ocpp_info)."""
        return paging.load("ocpp_info").summary(self)
