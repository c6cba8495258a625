"""IEC 61851 control pilot: the 1 kHz PWM the EVSE drives and the levels it reads back.

The pilot output (GP16) drives a +-12 V op-amp stage; the pilot is read back on ADC0
(GP26) through a divider with a 1.65 V bias, 8 V of pilot per ADC volt (docs/hardware.md).

- `offer(amps)`: PWM duty encodes the offered current (IEC 61851-1 Annex A: duty % =
  A / 0.6 for 6..51 A, A / 2.5 + 64 from 52.5 A up to 80 A); `offer(0)` or `offer(None)`
  holds a steady +12 V, the "no PWM" level an EVSE shows when it offers nothing.
- `sample(window_us)`: read the pilot for `window_us` (one PWM period is 1000 us) and
  return the (high, low) levels in pilot volts as integers x10 (no float allocation).
- `Classifier`: high level -> state A..F with hysteresis and debouncing; a missing diode
  is a low level that does not reach -12 V while the PWM runs.
"""

import time

PWM_HZ = 1000
STEADY = 65535  # duty_u16 for a constant +12 V

# Nominal high levels (V) and the decision thresholds between them (V x10).
# A 12, B 9, C 6, D 3, E 0, F -12.
_EDGES = ((105, "A"), (75, "B"), (45, "C"), (15, "D"), (-60, "E"))
HYSTERESIS_DV = 4  # 0.4 V in favour of the current state
DIODE_LOW_DV = -100  # the low level must reach below -10 V when the EV's diode is there


def duty_pct(amps):
    """PWM duty (percent) that offers `amps` (IEC 61851-1 Annex A); 0 for "no offer" (below
    6 A). The table has no duty for 51..52.5 A: those get 85 % (51 A), never more than asked."""
    if amps is None or amps < 6:
        return 0.0
    if amps <= 52.5:
        return min(amps, 51) / 0.6
    if amps > 80:
        amps = 80
    return amps / 2.5 + 64


def amps_for_duty(pct):
    """Current (A) a duty (percent) offers, the EV's side of the same table: 8..10 % 6 A,
    10..85 % duty x 0.6, 85..96 % (duty - 64) x 2.5, 96..97 % 80 A, anything else 0."""
    if pct < 8 or pct > 97:
        return 0.0
    if pct < 10:
        return 6.0
    if pct <= 85:
        return pct * 0.6
    if pct <= 96:
        return (pct - 64) * 2.5
    return 80.0


def classify(high_dv, previous=None):
    """State letter of a high level (V x10), with hysteresis around `previous`."""
    for edge, state in _EDGES:
        limit = edge
        if previous is not None:
            # make it harder to leave the current state: shift the edge away from it
            if previous == state:
                limit = edge - HYSTERESIS_DV
            elif _rank(previous) < _rank(state):
                limit = edge - HYSTERESIS_DV  # coming from a higher state
            else:
                limit = edge + HYSTERESIS_DV
        if high_dv >= limit:
            return state
    return "F"


_ORDER = "ABCDEF"


def _rank(state):
    return _ORDER.find(state)


class Pilot:
    def __init__(self, machine, pins, calibration):
        self.pwm = machine.PWM(machine.Pin(pins["pilot_pwm"]))
        self.pwm.freq(PWM_HZ)
        self.adc = machine.ADC(machine.Pin(pins["pilot_adc"]))
        # raw u16 -> pilot volts x10: v_adc = raw * 3.3 / 65535; pilot = (v_adc - bias) * k
        self.bias_raw = int(calibration["pilot_bias_v"] / 3.3 * 65535)
        self.dv_per_raw = 3.3 * calibration["pilot_v_per_adc_v"] * 10 / 65535
        self.spread_raw = int(30 / self.dv_per_raw)  # 3 V between the levels: both were seen
        self.offered = 0.0
        self.duty = STEADY
        self.pwm.duty_u16(STEADY)

    def offer(self, amps):
        """Offer `amps` on the pilot (None/0/below 6 A: steady +12 V, nothing offered)."""
        pct = duty_pct(amps)
        # rounded down: at 85 % a rounded-up duty would read as the upper band (52.5 A)
        duty = int(pct * 65535 / 100) if pct else STEADY
        if duty != self.duty:
            self.duty = duty
            self.pwm.duty_u16(duty)
        self.offered = amps_for_duty(pct) if pct else 0.0
        return self.offered

    def pwm_on(self):
        return self.duty != STEADY

    def sample(self, window_us=1100):
        """(high, low) pilot levels in volts x10 over `window_us` microseconds.

        While the PWM runs, a window that saw only one level goes on for one more whole
        window of reads: with a slow ADC path (the host's test bench, a busy core) a short
        high phase can fall between samples, or a pause (another thread, a loaded host)
        can leave every sample in one phase, and one level alone would read as state F.
        A pilot really stuck at one level is read for two windows (at most sixteen of reading:
        the time the reads were held off by a pause does not count, or a loaded host that
        held the thread that long would end the read on one level, a false state F)."""
        read = self.adc.read_u16
        hi = 0
        lo = 65535
        start = time.ticks_us()
        n = 0
        pwm = self.pwm_on()
        spread = self.spread_raw
        more = None  # when the extra window began
        last = 0
        paused = 0  # time the reads were held off (gaps over a quarter window)
        while True:
            v = read()
            if v > hi:
                hi = v
            if v < lo:
                lo = v
            n += 1
            if n >= 24:
                elapsed = time.ticks_diff(time.ticks_us(), start)
                if elapsed - last > window_us // 4:
                    paused += elapsed - last
                if elapsed >= window_us:
                    if hi - lo > spread or not pwm:
                        break
                    if more is None or elapsed - last > window_us // 4:
                        more = elapsed  # (again after a pause: its reads must cover a window)
                    if elapsed - more >= window_us or elapsed - paused >= 16 * window_us:
                        break
                last = elapsed
            if n >= 2000:  # a very fast ADC: enough samples of the window
                break
        k = self.dv_per_raw
        return int((hi - self.bias_raw) * k), int((lo - self.bias_raw) * k)


class Classifier:
    """Debounced pilot state: a new state is accepted after `debounce` equal readings."""

    def __init__(self, debounce=2, diode_debounce=3):
        self.state = "A"
        self.candidate = "A"
        self.count = 0
        self.debounce = debounce
        self.diode_debounce = diode_debounce
        self.diode_bad = 0
        self.high_dv = 120
        self.low_dv = 120

    def feed(self, high_dv, low_dv, pwm_on):
        """Feed one (high, low) sample; returns the debounced state."""
        self.high_dv = high_dv
        self.low_dv = low_dv
        raw = classify(high_dv, self.state)
        if raw == self.candidate:
            self.count += 1
        else:
            self.candidate = raw
            self.count = 1
        if self.count >= self.debounce:
            self.state = raw
        if pwm_on and self.state in "BCD" and low_dv > DIODE_LOW_DV:
            self.diode_bad += 1
        elif self.state == "A" or (pwm_on and low_dv <= DIODE_LOW_DV):
            self.diode_bad = 0
        return self.state

    def diode_missing(self):
        return self.diode_bad >= self.diode_debounce
