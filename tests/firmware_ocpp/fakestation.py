"""A test double of the station interface (docs/firmware.md), for unit-level runs of the
charge point without the station's hardware loop. Scenario tests use the real station.

Its contactor and EV can misbehave as real ones do, so OCPP tests see what the charge point
does when the station's safety code trips (firmware/lib/station.py, the same contract):

- `welded = True`: the contactor conducts whatever it is commanded (a welded contact).
  The station only closes after a measurement with the contactor open showed no current;
  current through the open contactor in two measurements in a row (>= WELDED_A) is the
  latched fault ("PowerSwitchFailure", "<A> A with the contactor open").
- `draw_a = <amps>`: the EV draws that much whatever the pilot offers (None: it follows the
  offer). Above the offer plus OVER_CURRENT_MARGIN_A for OVER_CURRENT_TICKS measurements in
  a row it is the fault ("OverCurrentFailure", "<A> A over the <offer> A offered"), cleared
  when the EV is unplugged (pilot A).
- `fault_list`: faults a test sets directly.

Any active fault stops the offer and opens the contactor (a welded one keeps conducting).
`tick(seconds)` is one measurement: it adds the energy of `seconds` at the current drawn
and applies the rules above. Runs on CPython and MicroPython."""

WELDED_A = 1.0
OVER_CURRENT_MARGIN_A = 2.0
OVER_CURRENT_TICKS = 10  # the EV's grace to follow a lower offer (the runner ticks at 10 Hz)
VOLTS = 230.0


class FakeStation:
    def __init__(self):
        self.pilot = "A"
        self.allowed = False
        self.limit = None
        self.wh = 0.0
        self.fault_list = []
        self.amps = 16.0
        self.welded = False
        self.draw_a = None
        self.closed = False  # the contactor as commanded (what relay_closed() reports)
        self.welded_seen = 0
        self.welded_fault = None  # amps seen through the open contactor (latched)
        self.over_seen = 0
        self.over_fault = None  # (amps drawn, amps offered) until unplugged

    def start(self):
        pass

    async def run(self):
        pass

    def pilot_state(self):
        return self.pilot

    def plugged(self):
        return self.pilot in ("B", "C", "D")

    def ev_wants_energy(self):
        return self.pilot in ("C", "D")

    def set_charging_allowed(self, flag):
        self.allowed = flag
        if not flag:
            self.closed = False

    def set_limit_a(self, amps):
        self.limit = amps

    def offered_a(self):
        if not self.allowed or self.faults():
            return 0
        return self.amps if self.limit is None else min(self.amps, self.limit)

    def relay_closed(self):
        if self.closed and not (self.allowed and self.pilot in ("C", "D") and not self.faults()):
            self.closed = False  # opened as soon as charging may not go on
        return self.closed

    def conducting(self):
        return self.relay_closed() or self.welded

    def faults(self):
        out = []
        if self.welded_fault is not None:
            out.append(("PowerSwitchFailure", "%.1f A with the contactor open" % self.welded_fault))
        if self.over_fault is not None:
            out.append(("OverCurrentFailure", "%.1f A over the %.0f A offered" % self.over_fault))
        return out + self.fault_list

    def energy_wh(self):
        return self.wh

    def power_w(self):
        return self.current_a() * VOLTS

    def current_a(self):
        if not self.conducting() or self.pilot not in ("C", "D"):
            return 0.0
        if self.draw_a is not None:
            return float(self.draw_a)
        return float(self.offered_a())

    def voltage_v(self):
        return VOLTS

    def temperature_c(self):
        return 24.0

    def humidity(self):
        return 40.0

    def mcu_temperature_c(self):
        return 30.0

    def tick(self, seconds):
        """One measurement: energy over `seconds`, then the station's safety rules."""
        amps = self.current_a()
        self.wh += amps * VOLTS * seconds / 3600.0
        if self.pilot == "A":
            self.over_seen = 0
            self.over_fault = None
        if self.relay_closed():
            offered = self.offered_a()
            if amps > offered + OVER_CURRENT_MARGIN_A:
                self.over_seen += 1
                if self.over_seen >= OVER_CURRENT_TICKS:
                    self.over_fault = (amps, offered)
                    self.closed = False
            else:
                self.over_seen = 0
            return
        if amps >= WELDED_A:
            self.welded_seen += 1
            if self.welded_seen >= 2:
                self.welded_fault = amps
            return
        self.welded_seen = 0
        if self.allowed and self.pilot in ("C", "D") and self.offered_a() > 0 and not self.faults():
            self.closed = True  # a measurement with the contactor open showed no current
