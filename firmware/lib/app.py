"""The board application: read the config, bring up the station, the connector logic,
the uplinks and the field tools, run them on one event loop.

    App(flash=None, machine=None, network=None, dht=None, ntptime=None, console=print)
    App().run()

Built as an object from a flash directory and the hardware modules, so one process can
hold many boards (fleet simulator). `main.py` builds one as `__main__.app`, which the REPL
helpers (`import ev`) find.

Tasks: the station's sampling task (its safety timer runs outside the loop), Wi-Fi and
NTP, the connector logic (OCPP `ChargePoint` when config.json has an `ocpp` section, else
`LocalPoint`: local mode, see local_point.py), MQTT telemetry (inside the OCPP session
when a second TLS session does not fit: `_telemetry_via_ocpp`), ThingSpeak, the console
REPL, the watchdog feeder and the console report. Every task is guarded: a crash is
logged and the task restarted after a pause; the watchdog (`app.watchdog_ms`, default
8000, max 8388) is fed only while the station's sampling task keeps cycling.
"""

import asyncio
import gc
import json
import time

from clock import Clock
from logfile import Log
from micropython import const
from storage import Flash

_GC_EVERY = const(8192)
# the heap both TLS sessions (wss:// and mqtts://) need next to the firmware (a Pico W has
# 191 872 bytes and ran out; docs/firmware.md, "Heap with every uplink on TLS")
TLS_PAIR_HEAP_BYTES = const(262144)


def app_options(config):
    """The `app` section over the defaults (built per call: no module-level dict)."""
    out = {
        "watchdog_ms": 8000,  # 0 switches the watchdog off
        "healthy_ms": 5000,  # the sampling task must have cycled this recently to feed it
        "report_s": 0,  # a "sensors {...}" line on the console every N s (0: off)
        "ntp_every_s": 21600,
        "log_bytes": 16384,
        "console": True,  # the REPL task on the serial console (the fleet simulator has none)
        "collect": True,  # gc.collect() around start-up (a simulator of thousands skips it)
        "loop_probe_ms": 100,  # loop-gap probe period (0: off); see App.loop_probe
    }
    extra = config.get("app")
    if isinstance(extra, dict):
        for key in extra:
            out[key] = extra[key]
    if "report_s" in config["intervals"]:
        out["report_s"] = config["intervals"]["report_s"]
    return out


class App:
    def __init__(self, flash=None, machine=None, network=None, dht=None, ntptime=None,
                 console=print):
        if machine is None:
            import machine
        if network is None:
            try:
                import network
            except ImportError:
                network = None
        if dht is None:
            import dht
        self.machine = machine
        self.network = network
        self.dht_mod = dht
        self.ntptime = ntptime
        self.flash = flash or Flash("")
        self.start_ms = time.ticks_ms()
        self.say = console
        rtc = None
        try:
            rtc = machine.RTC()
        except Exception:
            pass
        self.clock = Clock(rtc)
        self.log = Log(self.flash, echo=console, clock=self.clock)
        import config

        self.config, error = config.load(self.flash)
        del config
        self._forget("config")  # DEFAULTS and the checks are needed once: off the heap
        self.opts = app_options(self.config)
        self.log.max_bytes = self.opts["log_bytes"]
        if error:
            self.log("config: " + error)
        cfg = self.config
        if cfg["ocpp"] is not None:
            # the biggest module first, into the cleanest heap (less fragmentation)
            gc.collect()
            try:
                import chargepoint  # noqa: F401
            except ImportError:
                pass
        gc.collect()
        from station import Station

        self.station = Station(cfg, self.flash, machine, dht)
        self.wifi = None
        if cfg["wifi"] is not None and network is not None:
            gc.collect()  # load modules into a clean heap: less fragmentation
            from wifi import Wifi

            self.wifi = Wifi(network, cfg["wifi"], self.log)
        self.point = self._connector_logic()
        self.telemetry = None
        self.telemetry_via = self._telemetry_via_ocpp(cfg)  # why it rides in OCPP, or None
        if cfg["mqtt"] is not None:
            link = None
            if self.telemetry_via is not None:
                self.log("mqtt: " + self.telemetry_via[0])
                if self.mode == "ocpp":
                    gc.collect()  # load modules into a clean heap: less fragmentation
                    from telemetry_ocpp import OcppTelemetryLink

                    link = OcppTelemetryLink(self.point, cfg["mqtt"].get("max_backoff_s", 60),
                                             self.log)
                else:
                    self.log("mqtt: no OCPP charge point to carry it: telemetry is off")
            if self.telemetry_via is None or link is not None:
                gc.collect()  # load modules into a clean heap: less fragmentation
                from telemetry import Telemetry

                self.telemetry = Telemetry(cfg, self.station, self.clock, self.status, self.wifi,
                                           self.log, self.flash, self.authorization_key, link)
        self.thingspeak = None
        self.thingspeak_refused = self._https_next_to_wss(cfg)
        if self.thingspeak_refused:
            self.log("thingspeak: " + self.thingspeak_refused)
        elif cfg["thingspeak"] is not None:
            gc.collect()  # load modules into a clean heap: less fragmentation
            from thingspeak import ThingSpeak

            self.thingspeak = ThingSpeak(cfg, self.station, self.clock, self.status, self.wifi,
                                         self.log, flash=self.flash)
        self.console = None
        self.wdt = None
        self.reports = 0
        self.task_errors = 0
        self.rebooting = False
        self.loop_gap_ms = None  # longest wake-to-wake interval of the loop probe

    def _telemetry_via_ocpp(self, cfg):
        """(console line, status words) when telemetry goes inside the OCPP session as
        DataTransfer (telemetry_ocpp.py), else None: when `mqtt.via` is "ocpp", or when
        mqtts:// telemetry would be a second TLS session next to a wss:// charge point on a
        heap below TLS_PAIR_HEAP_BYTES. Both sessions resident need about 57 KiB besides
        the firmware's 118 KiB: a Pico W's 187 KiB heap ran out during a charging session
        (MemoryError). A board with a bigger heap (a Pico 2 W) runs both."""
        mqtt = cfg["mqtt"]
        ocpp = cfg["ocpp"]
        if mqtt is None or ocpp is None:
            return None
        if mqtt.get("via") == "ocpp":
            return ("telemetry goes inside the OCPP session (DataTransfer), as mqtt.via says",
                    "mqtt.via")
        heap = self._second_tls_short_of_heap(mqtt.get("url", ""), "mqtts://", ocpp)
        if heap is None:
            return None
        return ("mqtts:// next to a wss:// charge point does not fit a heap of %d bytes "
                "(%d needed): telemetry goes inside the OCPP wss session (DataTransfer)" % (
                    heap, TLS_PAIR_HEAP_BYTES), "mqtts next to wss does not fit this heap")

    @staticmethod
    def _second_tls_short_of_heap(url, tls_scheme, ocpp):
        """The heap size (bytes) when `url` is a second TLS session (`tls_scheme`) next to a
        wss:// charge point on a heap below TLS_PAIR_HEAP_BYTES, else None."""
        if not hasattr(gc, "mem_alloc"):
            return None
        if not (str(url).startswith(tls_scheme) and str(ocpp.get("url", "")).startswith("wss://")):
            return None
        heap = gc.mem_free() + gc.mem_alloc()
        return heap if heap < TLS_PAIR_HEAP_BYTES else None

    def _https_next_to_wss(self, cfg):
        """Why ThingSpeak is not started, or None: its https:// posts are a second TLS
        session (transient, every 15 s) next to a wss:// charge point, and on a heap below
        TLS_PAIR_HEAP_BYTES each post took what the rest of the board needed (a Pico W's
        heap: every post went out, and the board's own allocations failed meanwhile with
        MemoryError). The central system's ThingSpeak bridge can feed the channel from the
        telemetry, which rides inside the wss session there (docs/firmware.md)."""
        ts = cfg["thingspeak"]
        if ts is None or cfg["ocpp"] is None:
            return None
        heap = self._second_tls_short_of_heap(ts.get("url", "https://"), "https://", cfg["ocpp"])
        if heap is None:
            return None
        return ("https:// next to a wss:// charge point does not fit a heap of %d bytes (%d "
                "needed): ThingSpeak is off on the board; the central system's ThingSpeak "
                "bridge can feed the channel from the telemetry" % (heap, TLS_PAIR_HEAP_BYTES))

    def _connector_logic(self):
        cfg = self.config
        if cfg["ocpp"] is not None:
            try:
                gc.collect()  # load modules into a clean heap: less fragmentation
                from chargepoint import ChargePoint
            except ImportError as exc:
                self.log("ocpp: charge point module missing (%s); local mode" % exc)
            else:
                self.mode = "ocpp"
                point = ChargePoint(cfg, self.station, self.flash, self.clock, log=self.log,
                                    on_reset=self.on_reset)
                point.wifi = self.wifi  # no connection attempts while Wi-Fi is down
                return point
        gc.collect()  # load modules into a clean heap: less fragmentation
        from local_point import LocalPoint

        self.mode = "local"
        return LocalPoint(cfg, self.station, self.flash, self.clock, log=self.log)

    # -- what the helpers and uplinks ask -----------------------------------------------
    def status(self):
        """The connector's ChargePointStatus as the connector logic derives it."""
        try:
            if self.mode == "ocpp":  # without summary(): no ocpp_info load every report
                return self.point.connector_status()
            return self.point.status
        except Exception:
            return None

    def authorization_key(self):
        """The station's AuthorizationKey as the charge point holds it now (rotated keys
        included), or None; the MQTT link's default password."""
        try:
            if self.mode == "ocpp":
                return self.point.cfg.get("AuthorizationKey") or None
        except Exception:
            pass
        return None

    def uptime_s(self):
        return time.ticks_diff(time.ticks_ms(), self.start_ms) // 1000

    # -- life ---------------------------------------------------------------------------
    def on_reset(self, kind):
        """The charge point asks for a reset ("Hard" / "Soft")."""
        self.reboot("OCPP %s reset" % kind)

    def shutdown(self, why):
        self.log("reboot: %s" % why)
        self.station.stop()
        if self.telemetry is not None:
            self.telemetry.shutdown()

    def reboot(self, why="REPL"):
        """Clean reboot path: contactor open, energy persisted, MQTT offline, reset."""
        if self.rebooting:
            return
        self.rebooting = True
        try:
            self.shutdown(why)
        finally:
            self.machine.reset()

    async def guard(self, name, factory):
        """Run a task forever: a crash is logged and the task restarted after a pause."""
        while True:
            try:
                await factory()
                return
            except Exception as exc:
                self.task_errors += 1
                self.log("task %s failed: %r; restarting" % (name, exc))
                await asyncio.sleep(2)

    async def ntp(self):
        if self.ntptime is None:
            try:
                import ntptime
            except ImportError:
                return
            self.ntptime = ntptime
        while True:
            await self.wifi.event.wait()
            try:
                ts = self.ntptime.time()
                if ts < 946684800 + 86400 * 365 * 20:  # an epoch of 2000 (older ports)
                    ts += 946684800
                self.clock.set(ts, "ntp")
                self.log("ntp: time set to %s" % self.clock.iso())
                await asyncio.sleep(self.opts["ntp_every_s"])
            except (OSError, ValueError) as exc:
                self.log("ntp: failed (%s)" % exc)
                await asyncio.sleep(30)

    async def watchdog(self):
        ms = self.opts["watchdog_ms"]
        if not ms:
            return
        self.wdt = self.machine.WDT(timeout=min(8388, int(ms)))
        healthy = self.opts["healthy_ms"]
        while True:
            last = self.station.cycle_ms
            if last is not None and time.ticks_diff(time.ticks_ms(), last) < healthy:
                self.wdt.feed()
            await asyncio.sleep_ms(1000)

    async def loop_probe(self):
        """Measures how long the event loop stays away: a task that asks to wake every
        `loop_probe_ms` and keeps the longest interval between two wakes (the board's own
        clock). Any single blocking stretch is at most that long; the figure is at most one
        period above the longest stretch. Shown by ev.status() and ev.report()."""
        period = int(self.opts["loop_probe_ms"])
        if period <= 0:
            return
        last = time.ticks_ms()
        self.loop_gap_ms = 0
        while True:
            await asyncio.sleep_ms(period)
            now = time.ticks_ms()
            gap = time.ticks_diff(now, last)
            if gap > self.loop_gap_ms:
                self.loop_gap_ms = gap
            last = now

    def _forget(self, name):
        """Drop a module loaded for a moment (diagnostics) so its code leaves the heap."""
        import paging

        paging.drop(name)

    def report_line(self):
        """The report as JSON (console report, `ev.report()`); the heap is the live heap
        after a collection, measured before the diagnostics module is loaded for it. While
        an https transfer holds the OCPP link, only the heap (`"transfer": true`)."""
        heap = None
        if hasattr(gc, "mem_free"):
            gc.collect()
            heap = gc.mem_free()
        link = getattr(self.point, "link", None)
        if heap is not None and link is not None and link.held:
            # an https transfer holds the OCPP link (a firmware download): the heap alone,
            # without loading the diagnostics module (about 12 KB) next to its TLS session
            return json.dumps({"heap": heap, "transfer": True})
        import diag

        out = diag.report(self)
        del diag
        self._forget("diag")
        if heap is not None:
            out["heap"] = heap
        return json.dumps(out)

    async def reporter(self):
        period = self.opts["report_s"]
        if not period:
            return
        while True:
            self.say("sensors " + self.report_line())
            self.reports += 1
            await asyncio.sleep(period)

    async def main(self):
        self.log("PicoCharge %s booting (%s mode)" % (self.config["cp_id"], self.mode))
        self.station.start()
        if self.wifi is None:
            self.log("wifi: no wifi section in config.json, staying offline")
        if self.opts["collect"]:
            gc.collect()  # load modules into a clean heap: less fragmentation
        tasks = [asyncio.create_task(self.guard("station", self.station.run))]
        if self.wifi is not None:
            tasks.append(asyncio.create_task(self.guard("wifi", self.wifi.run)))
            tasks.append(asyncio.create_task(self.guard("ntp", self.ntp)))
        tasks.append(asyncio.create_task(self.guard("connector", self.point.run)))
        if self.telemetry is not None:
            tasks.append(asyncio.create_task(self.guard("mqtt", self.telemetry.run)))
        if self.thingspeak is not None:
            tasks.append(asyncio.create_task(self.guard("thingspeak", self.thingspeak.run)))
        if self.opts["console"]:
            from console import Console

            self.console = Console()
            tasks.append(asyncio.create_task(self.guard("console", self.console.run)))
        tasks.append(asyncio.create_task(self.guard("watchdog", self.watchdog)))
        tasks.append(asyncio.create_task(self.guard("loop probe", self.loop_probe)))
        tasks.append(asyncio.create_task(self.guard("report", self.reporter)))
        if self.opts["collect"]:
            gc.collect()
            if hasattr(gc, "threshold"):
                # collect after every few KB allocated: the allocator starts from the bottom
                # again, so short-lived objects do not scatter over the free top of the heap
                gc.threshold(_GC_EVERY)
        import diag

        self.log("ready: %s" % diag.uplinks_text(self))
        del diag
        self._forget("diag")
        while True:
            await asyncio.sleep(3600)

    def run(self):
        try:
            asyncio.run(self.main())
        finally:
            if not self.rebooting:
                self.station.stop()

