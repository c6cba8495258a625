"""The station: sensors, meter, control pilot, contactor and the safety timer of one
connector. The charge point (OCPP) and the app drive it through the calls listed in
docs/firmware.md; nothing here knows about networks.

Two contexts run the station:

- the **safety timer** (`machine.Timer`, every `station.safety_ms`, outside the event
  loop: a soft IRQ on the rp2 port, a thread in the host stand-in) reads the pilot for one
  PWM period, classifies and debounces it, checks the diode and the RP2040 temperature,
  and OPENS the contactor when the pilot leaves C/D (unplug = A, EV stopped = B, E, F), the
  diode is missing, or a fault is active. If the cooperative loop has not metered for
  `station.meter_stale_ms` (a blocked socket, a long REPL command), the timer meters the
  current itself so over-current still trips. It never closes the contactor.
- the **sampling task** (`run()`, every `station.meter_ms`): meter (RMS, power, energy),
  DHT11 (every `intervals.sensors_s`, >= 2 s), fault evaluation (over-temperature,
  over-current, welded contactor, meter failure), the pilot offer, and closing the
  contactor when the EV asks (C/D), the charge point allows it, something is offered and
  no current flows through the open contactor (welded check before every close).

Configuration: `pins`, `calibration`, `limits`, `intervals.sensors_s`, and an optional
`station` section (defaults in `options()` below; the fleet simulator raises the periods).
"""

import asyncio
import time

from meter import Meter, Register
from micropython import const
from pilot import Classifier, Pilot
from sensors import Dht11, McuTemp

# fault flags, worst first (faults() reports them in this order)
_WELDED = const(0)
_PILOT_E = const(1)
_PILOT_F = const(2)
_DIODE = const(3)
_OVER_CURRENT = const(4)
_HOT = const(5)
_MCU_HOT = const(6)
_METER = const(7)
_NFLAGS = const(8)
DEFER_MAX_MS = const(5000)  # longest a span waits for a good measurement to be billed
CODES = ("PowerSwitchFailure", "EVCommunicationError", "InternalError", "EVCommunicationError",
         "OverCurrentFailure", "HighTemperature", "HighTemperature", "PowerMeterFailure")


def options(config):
    """The `station` section over the defaults (built per call: no module-level dict)."""
    out = {
        "safety_ms": 20,  # safety timer period
        "safety_window_us": 1100,  # pilot read window per tick (one 1 kHz period + margin)
        "pilot_debounce": 2,  # equal readings before a pilot state is accepted
        "meter_ms": 250,  # sampling task period
        "meter_samples": 64,  # sample pairs per measurement
        "meter_cycles": 1,  # whole mains cycles per measurement
        "meter_stale_ms": 600,  # the timer meters itself when the loop is older than this
        "persist_wh": 50,  # energy register: write after this many Wh ...
        "persist_min_s": 60,  # ... but not more often than this ...
        "persist_max_s": 900,  # ... and at least this often while it changes
        "over_current_ms": 5000,  # IEC 61851: the EV has 5 s to follow a lower PWM duty
        "welded_a": 1.0,  # current through an open contactor that means "welded"
        "stop_grace_ms": 3000,  # open anyway if the EV keeps state C this long after a stop
        "temp_hysteresis_c": 5.0,  # an over-temperature clears this far below the limit
        "mcu_every": 25,  # RP2040 temperature every N safety ticks
    }
    extra = config.get("station")
    if isinstance(extra, dict):
        for key in extra:
            out[key] = extra[key]
    return out


class Station:
    def __init__(self, config, flash, machine=None, dht=None):
        if machine is None:
            import machine
        if dht is None:
            import dht
        self.machine = machine
        self.config = config
        self.opts = opts = options(config)
        pins = config["pins"]
        cal = config["calibration"]
        self.limits = config["limits"]
        self.relay_pin = machine.Pin(pins["relay"], machine.Pin.OUT, value=0)
        self.pilot = Pilot(machine, pins, cal)
        self.classifier = Classifier(opts["pilot_debounce"])
        self.meter = Meter(machine, pins, cal, opts["meter_samples"], opts["meter_cycles"])
        # the timer's own meter (own buffers: it may run while the loop is mid-measurement)
        self.safety_meter = Meter(machine, pins, cal, max(16, opts["meter_samples"] // 2), 1)
        self.register = Register(flash, "energy.json", opts["persist_wh"], opts["persist_min_s"],
                                 opts["persist_max_s"])
        interval_ms = int(config["intervals"].get("sensors_s", 5) * 1000)
        self.dht = Dht11(dht, machine, pins["dht"], interval_ms, cal.get("dht_offset_c", 0.0))
        self.mcu = McuTemp(machine, cal.get("mcu_temp_offset_c", 0.0))
        self.timer = None
        # control inputs
        self._allowed = False
        self._limit = None
        self._stop_ms = None
        # contactor bookkeeping (written by both contexts; plain ints and bools)
        self._relay = False
        self.closed_ms = None
        self.opened_ms = None
        self.offer_ms = None
        self._cd_since = None  # when the EV was first seen asking for power (C/D) this time
        self._clear_ms = None  # start of the last good measurement: open contactor, no current
        self.open_reason = None
        self.opens = 0
        self._opens_seen = 0
        # safety timer bookkeeping
        self.ticks = 0
        self.tick_ms = None
        self.max_tick_gap_ms = 0
        self.safety_meterings = 0
        # faults: flags plus the numbers their messages show
        self.flags = [False] * _NFLAGS
        self.fault_value = [0.0] * _NFLAGS
        self._oc_since = None
        self._welded_count = 0
        self._meter_bad = 0
        self.cycles = 0
        self.cycle_ms = None
        self._e_ms = None
        self._p_prev = 0.0
        self._good_ms = None  # cycle time of the last good (unforced) measurement
        # a span waiting for a good measurement (none since the closing): its estimate from
        # the forced readings (W·ms), their power and its end; _deferred_ms None: none
        self._deferred_wms = 0.0
        self._deferred_p = 0.0
        self._deferred_ms = None
        self.estimated_ms = 0  # time billed on an estimate (spoiled passes), not a measurement
        self._last_pilot = "A"
        self.energy_listeners = []  # callables(wh) when the register is saved (optional)

    # -- life ------------------------------------------------------------------------------
    def start(self):
        """Start the safety timer (outside the event loop)."""
        if self.timer is None:
            self.mcu.read()
            self.timer = self.machine.Timer(-1, mode=self.machine.Timer.PERIODIC,
                                            period=int(self.opts["safety_ms"]),
                                            callback=self._tick)

    def stop(self):
        """Stop the timer, open the contactor, persist the register (clean reboot path)."""
        if self.timer is not None:
            self.timer.deinit()
            self.timer = None
        self.pilot.offer(0)
        self._open("shutdown")
        self.register.save()

    async def run(self):
        """The sampling task: one cycle every `station.meter_ms`."""
        period = int(self.opts["meter_ms"])
        while True:
            try:
                self.cycle()
            except Exception as exc:  # a sensor glitch must never end the sampling task
                self.last_error = repr(exc)
            await asyncio.sleep_ms(period)

    # -- the contract used by the charge point ------------------------------------------
    def pilot_state(self):
        return self.classifier.state

    def plugged(self):
        return self.classifier.state in ("B", "C", "D")

    def ev_wants_energy(self):
        return self.classifier.state in ("C", "D")

    def set_charging_allowed(self, flag):
        flag = bool(flag)
        if flag != self._allowed:
            self._allowed = flag
            self._stop_ms = None if flag else time.ticks_ms()
            self._control()

    def set_limit_a(self, amps):
        self._limit = None if amps is None else float(amps)
        self._control()

    def offered_a(self):
        return self.pilot.offered

    def relay_closed(self):
        return self._relay

    def charging_allowed(self):
        return self._allowed

    def limit_a(self):
        return self._limit

    def faults(self):
        """[(ChargePointErrorCode, info)] active now, worst first."""
        out = []
        flags = self.flags
        val = self.fault_value
        for i in range(_NFLAGS):
            if flags[i]:
                out.append((CODES[i], self._info(i, val[i])))
        return out

    def warnings(self):
        """Non-fatal problems (the connector keeps working): [(code, info)]."""
        out = []
        if self.dht.state() != "ok" and (self.dht.last_error or self.dht.read_ms is not None):
            out.append(("OtherError", "DHT11 %s: %s" % (self.dht.state(), self.dht.last_error)))
        return out

    def energy_wh(self):
        """The register, brought up to this instant with the last measured power (0 once
        the contactor is open), so a transaction stopped between two sampling cycles
        counts its last fraction of a second."""
        self._commit_if_opened()
        last = self._e_ms
        if last is not None:
            now = time.ticks_ms()
            step = self._first_step(last, now)
            if step is None:
                if self._relay:  # steady since the last measurement: its power still flows
                    self._integrate(now, self._p_prev, False)
            elif step == self.opened_ms and not self._relay:
                # opened first: the old power flowed until the opening, nothing after it
                self._integrate(now, 0.0, True)
            # (closed or re-offered first: wait for the next measurement of the new power)
        return self.register.wh

    def has_measured(self):
        """Whether the meter has given a reading (or found its front ends dead) since boot:
        before that, voltage, current and power are None for want of a measurement."""
        return self.meter.measured_ms is not None

    def power_w(self):
        return self.meter.power_w

    def current_a(self):
        return self.meter.current_a

    def voltage_v(self):
        return self.meter.voltage_v

    def temperature_c(self):
        return self.dht.temperature()

    def humidity(self):
        return self.dht.humidity()

    def mcu_temperature_c(self):
        return self.mcu.value

    def clear_faults(self):
        """Forget latched faults (a technician after a repair; `ev.clear()`)."""
        for i in range(_NFLAGS):
            self.flags[i] = False
        self._welded_count = 0
        self._oc_since = None

    # -- internals ----------------------------------------------------------------------
    def _info(self, i, v):
        if i == _WELDED:
            return "%.1f A with the contactor open" % v
        if i == _PILOT_E:
            return "pilot short (state E)"
        if i == _PILOT_F:
            return "pilot stuck low (state F)"
        if i == _DIODE:
            return "pilot diode missing (low %.1f V)" % v
        if i == _OVER_CURRENT:
            return "%.1f A over the %.0f A offered" % (v, self._oc_limit())
        if i == _HOT:
            return "enclosure %.0f C (limit %.0f C)" % (v, self.limits["over_temp_c"])
        if i == _MCU_HOT:
            return "MCU %.0f C (limit %.0f C)" % (v, self.limits["mcu_over_temp_c"])
        return "no mains voltage on the meter"

    def _oc_limit(self):
        return self.pilot.offered if self.pilot.offered > 0 else self.max_current()

    def max_current(self):
        return float(self.limits["max_current_a"])

    # The timer (an IRQ) may open while the loop closes: the flag is written before the pin
    # on both sides and re-checked after closing, so the pin can end up open while the
    # flag says closed (the safe side, corrected by the next tick), never the reverse.
    def _open(self, reason):
        was = self._relay
        self._relay = False
        self.relay_pin.value(0)
        if was:
            self.opened_ms = time.ticks_ms()
            self.open_reason = reason
            self.opens += 1

    def _close(self):
        self._relay = True
        self.closed_ms = time.ticks_ms()
        self.relay_pin.value(1)
        if not self._relay:  # the timer opened meanwhile
            self.relay_pin.value(0)

    def _fatal(self):
        flags = self.flags
        for i in range(_NFLAGS):
            if flags[i]:
                return True
        return False

    def _tick(self, _timer=None):
        """Safety timer callback: runs outside the event loop; only ever opens."""
        now = time.ticks_ms()
        if self.tick_ms is not None:
            gap = time.ticks_diff(now, self.tick_ms)
            if gap > self.max_tick_gap_ms:
                self.max_tick_gap_ms = gap
        self.tick_ms = now
        self.ticks += 1
        pwm_on = self.pilot.pwm_on()
        high, low = self.pilot.sample(self.opts["safety_window_us"])
        state = self.classifier.feed(high, low, pwm_on)
        flags = self.flags
        flags[_PILOT_E] = state == "E"
        flags[_PILOT_F] = state == "F"
        if self.classifier.diode_missing():
            flags[_DIODE] = True
            self.fault_value[_DIODE] = low / 10
        elif state == "A":
            flags[_DIODE] = False
        if self.ticks % self.opts["mcu_every"] == 0:
            t = self.mcu.read()
            limit = self.limits["mcu_over_temp_c"]
            if t >= limit:
                flags[_MCU_HOT] = True
                self.fault_value[_MCU_HOT] = t
            elif t < limit - self.opts["temp_hysteresis_c"]:
                flags[_MCU_HOT] = False
        if self._relay:
            measured = self.meter.measured_ms
            if measured is None or time.ticks_diff(now, measured) > self.opts["meter_stale_ms"]:
                # the loop is stalled: meter here so over-current still trips
                sm = self.safety_meter
                sm.measure()
                self.safety_meterings += 1
                if not sm.spoiled and sm.current_a is not None and \
                        sm.current_a > self._oc_limit() + self.limits["over_current_margin_a"]:
                    if self._oc_since is None:
                        self._oc_since = now
                    elif time.ticks_diff(now, self._oc_since) >= self.opts["over_current_ms"]:
                        flags[_OVER_CURRENT] = True
                        self.fault_value[_OVER_CURRENT] = sm.current_a
            if state != "C" and state != "D":
                self._open("pilot " + state)
            elif self._fatal():
                self._open("fault")

    def cycle(self):
        """One sampling-task cycle (also callable directly by tests and the simulator)."""
        now = time.ticks_ms()
        self.cycles += 1
        self.cycle_ms = now
        relay_before = self._relay
        opened_before = self.opened_ms
        ok = self.meter.measure()
        # a spoiled measurement (every pass held too long) kept the last readings: nothing
        # new to integrate or to judge faults by this cycle (the next one covers the span)
        fresh = not self.meter.spoiled
        now = time.ticks_ms()
        if fresh:
            self._commit_if_opened()
            if not self.meter.forced:
                self._deferred_ms = None  # this measurement covers the span from the step
                self._integrate(now)
                self._good_ms = now
            elif not self._relay:
                self._integrate(now, 0.0, False)
            elif self._good_since_step():
                # read from a spoiled pass (faults still judge it: safety is not blind) but
                # not billed on: the span goes at the last good power
                self._estimated(now)
                self._integrate(now, self._p_prev, False)
            else:
                # no good measurement since the contactor closed or the offer changed: the
                # last good power is another state's (0 W before the closing) and a forced
                # reading can be a third off: the span waits for a good measurement, as
                # after a spoiled pass, with the forced estimate kept should the contactor
                # open first (or the wait pass DEFER_MAX_MS)
                self._defer(now)
        flags = self.flags
        # meter failure: two bad measurements in a row (a forced one, from a pass the
        # host or an interrupt spoiled, says nothing about the front ends)
        if ok and fresh:
            self._meter_bad = 0
            flags[_METER] = False
        elif fresh and not self.meter.forced:
            self._meter_bad += 1
            if self._meter_bad >= 2:
                flags[_METER] = True
        current = self.meter.current_a or 0.0
        # welded contactor: current while it has been open for the whole measurement
        opened_long = (not relay_before and not self._relay and
                       (opened_before is None or time.ticks_diff(now, opened_before) > 300))
        if ok and fresh and opened_long and current >= self.opts["welded_a"]:
            self._welded_count += 1
            if self._welded_count >= 2:
                flags[_WELDED] = True
                self.fault_value[_WELDED] = current
        elif fresh:
            self._welded_count = 0
            if ok and opened_long and not self.meter.forced:
                self._clear_ms = self.cycle_ms
        # over-current against what the pilot offers (the EV has over_current_ms to follow)
        if ok and fresh and self._relay and current > self._oc_limit() + self.limits["over_current_margin_a"]:
            if self._oc_since is None:
                self._oc_since = now
            elif time.ticks_diff(now, self._oc_since) >= self.opts["over_current_ms"]:
                flags[_OVER_CURRENT] = True
                self.fault_value[_OVER_CURRENT] = current
        elif ok and fresh:
            self._oc_since = None
        # environment
        self.dht.poll()
        t = self.dht.temperature()
        limit = self.limits["over_temp_c"]
        if t is not None:
            if t >= limit:
                flags[_HOT] = True
                self.fault_value[_HOT] = t
            elif t < limit - self.opts["temp_hysteresis_c"]:
                flags[_HOT] = False
        # unplug clears the faults that belong to the EV
        state = self.classifier.state
        if state == "A" and self._last_pilot != "A":
            flags[_OVER_CURRENT] = False
            self._oc_since = None
            self.register.save()
        self._last_pilot = state
        if self._fatal() and self._relay:
            self._open("fault")
        self._control()
        if self.opens != self._opens_seen:
            self._opens_seen = self.opens
            self.register.save()  # every stop persists the register
        else:
            self.register.maybe_save()

    def _good_since_step(self):
        """Whether a good measurement was taken since the contactor last closed and the
        offer last changed (the last good power is then this state's)."""
        good = self._good_ms
        if good is None:
            return False
        for t in (self.closed_ms, self.offer_ms):
            if t is not None and time.ticks_diff(t, good) >= 0:  # (a closing follows the
                return False  # measurement of its own cycle, in the same millisecond at times)
        return True

    def _defer(self, now):
        if self._e_ms is None:
            self._integrate(now)
            return
        p = self.meter.power_w or 0.0
        self._deferred_wms = self._span_wms(self._e_ms, now, p)
        self._deferred_p = p
        self._deferred_ms = now
        if time.ticks_diff(now, self._e_ms) > DEFER_MAX_MS:
            self._commit_deferred()  # the register does not stand still for long

    def _estimated(self, until):
        if self._e_ms is not None:
            self.estimated_ms += max(0, time.ticks_diff(until, self._e_ms))

    def _commit_if_opened(self):
        """A waiting span whose contactor opened before a good measurement came is billed
        on its forced estimate (the measurements after the opening read 0 W)."""
        if self._deferred_ms is not None and (
                not self._relay or (self.opened_ms is not None and
                                    time.ticks_diff(self.opened_ms, self._deferred_ms) >= 0)):
            self._commit_deferred()

    def _commit_deferred(self):
        """Bill the waiting span on its forced estimate (persisted at once when the
        contactor has opened: the stop's own save may have come before)."""
        if self._deferred_wms > 0:
            self.register.add(self._deferred_wms / 3600000.0)
        self._estimated(self._deferred_ms)
        self._e_ms = self._deferred_ms
        self._p_prev = self._deferred_p
        self._deferred_ms = None
        if not self._relay:
            self.register.save()

    def _integrate(self, now, p=None, measured=True):
        if p is None:
            p = self.meter.power_w or 0.0
        last = self._e_ms
        self._e_ms = now
        if last is None:
            self._p_prev = p
            return
        wms = self._span_wms(last, now, p)
        if measured:
            self._p_prev = p
        if wms > 0:
            self.register.add(wms / 3600000.0)
            if not self._relay:
                # the last span up to the opening, billed after the stop's own save (the
                # cycle after the opening was spoiled): the stop's register is persisted
                self.register.save()

    def _span_wms(self, last, now, p):
        """The energy (W·ms) from `last` to `now`, the power being `p` at the end."""
        dt = time.ticks_diff(now, last)
        if dt <= 0:
            return 0.0
        prev = self._p_prev
        # a step the station made itself (contactor opened or closed, offer changed) splits
        # the interval: the old power flowed until the step, the new one after it
        step = self._first_step(last, now)
        if step is not None:
            t1 = time.ticks_diff(step, last)
            return prev * t1 + p * (dt - t1)
        return (prev + p) * dt / 2

    def _first_step(self, last, now):
        """The earliest step the station made in [last, now] (contactor, offer), or None:
        the power measured before it flowed until then (a later step, such as the PWM
        stopping after the contactor opened, changes nothing more)."""
        span = time.ticks_diff(now, last)
        first = None
        for t in (self.opened_ms, self.closed_ms, self.offer_ms):
            if t is not None and 0 <= time.ticks_diff(t, last) <= span:
                if first is None or time.ticks_diff(t, first) < 0:
                    first = t
        return first

    def _control(self):
        """Apply the pilot offer and close the contactor when everything allows it."""
        state = self.classifier.state
        plugged = state in ("B", "C", "D")
        fatal = self._fatal()
        amps = self.max_current()
        if self._limit is not None and self._limit < amps:
            amps = self._limit
        offer = self._allowed and plugged and not fatal
        before = self.pilot.duty
        offered = self.pilot.offer(amps if offer else 0)
        if self.pilot.duty != before:
            self.offer_ms = time.ticks_ms()
        if state in ("C", "D"):
            if self._cd_since is None:
                self._cd_since = time.ticks_ms()
        else:
            self._cd_since = None
        if not self._relay:
            # close only after a measurement with the contactor open showed no current,
            # taken since the EV asks for power (a welded contactor conducts only then; an
            # older measurement, say from a loaded host's late sampling task, proves nothing)
            clear = self._clear_ms
            if (offer and offered > 0 and self._cd_since is not None and not self.flags[_WELDED]
                    and self._welded_count == 0 and clear is not None
                    and time.ticks_diff(clear, self._cd_since) >= 0):
                self._close()
                # the timer may have seen the pilot change meanwhile: re-check
                if self.classifier.state not in ("C", "D") or self._fatal():
                    self._open("pilot " + self.classifier.state)
        elif not offer or offered <= 0:
            # the PWM is off: the EV goes to B and the timer opens; force it after a grace
            since = self._stop_ms
            if since is None:
                self._stop_ms = since = time.ticks_ms()
            if time.ticks_diff(time.ticks_ms(), since) >= self.opts["stop_grace_ms"]:
                self._open("stop timeout")
        if self._allowed and offer and offered > 0:
            self._stop_ms = None
