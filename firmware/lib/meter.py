"""Energy metering: RMS current and voltage over whole mains cycles, real power, and a
monotonic, persisted energy register.

Front ends (docs/hardware.md): a current transformer (SCT-013-030 with burden) on ADC1
(GP27) and a ZMPT101B voltage module on ADC2 (GP28), both biased at 1.65 V; the config's
`calibration.amps_per_adc_v` / `volts_per_adc_v` turn ADC volts into amps and volts.

`Meter.measure()` samples both channels, interleaved, at evenly paced instants over
`cycles` whole mains cycles into preallocated `array('H')` buffers (no lists of floats on a
small heap), tracks each channel's DC offset, and computes I rms, V rms and real power
P = mean(v * i). A pair read slower than PAIR_US was interrupted between its time stamp and
its reads and is read again; a pass with a gap over a tenth of the window (or two steps) is
measured again. When three in a row are spoiled, the last pass is read by a least-squares
fit of the mains sine (offset + sin + cos at `mains_hz`) to its samples at the times they
were taken: gaps do not bias that fit, only its spread over the cycle matters, so a pass
whose samples cover enough of the cycle gives true readings of the fundamental (`fitted`;
an EV charger's current and the mains are within a percent of it). A pass the fit cannot
read (its samples bunched in a part of the cycle) keeps the last good readings (at most
MAX_SPOILED measurements in a row; then it is read anyway, `forced`, and its mean is not
taken as the DC offset): an interrupt, or a loaded host, never reads low.

`Register` integrates power into Wh and persists it with bounded flash wear: a write
when `persist_wh` has accumulated (and at least `persist_min_s` since the last write), at
most every `persist_max_s` while anything changed, and on demand (`save()`: stop, unplug,
reboot). A power cut loses at most that much; the register never goes backwards.
"""

import array
import math
import time

NOISE_FLOOR_A = 0.25  # below this the CT reads its own noise: report 0
MIN_MAINS_V = 50.0  # a working voltage front end sees the mains
MAX_SPOILED = 4  # measurements in a row that may keep the last good readings (1 s at 250 ms)
PAIR_US = 250  # a current/voltage pair read slower than this was interrupted: read again


# The fit's conditioning (its normal matrix's determinant over n^3; 1/4 for samples spread
# evenly over whole cycles) below which its amplitudes would amplify the noise
FIT_MIN_SPREAD = 0.02


def zeros(n, kind="H"):
    """A preallocated array of n zeros (array('H') unless `kind` says otherwise)."""
    buf = array.array(kind)
    for _ in range(n):
        buf.append(0)
    return buf


class Meter:
    def __init__(self, machine, pins, calibration, samples=64, cycles=1):
        self.adc_i = machine.ADC(machine.Pin(pins["current_adc"]))
        self.adc_v = machine.ADC(machine.Pin(pins["voltage_adc"]))
        self.samples = samples
        self.cycles = cycles
        self.buf_i = zeros(samples)
        self.buf_v = zeros(samples)
        self.buf_t = zeros(samples)  # microseconds since the first pair (65535: later)
        self.hz = calibration.get("mains_hz", 50) or 50
        self.period_us = min(60000, int(1000000 * cycles / self.hz))
        self.max_gap_us = max(self.period_us // 10, 2 * (self.period_us // samples))
        self.retries = 0
        self.spoiled = 0  # spoiled measurements in a row (the last good readings kept)
        self.k_i = 3.3 / 65535 * calibration["amps_per_adc_v"]
        self.k_v = 3.3 / 65535 * calibration["volts_per_adc_v"]
        self.off_i = calibration["meter_bias_v"] / 3.3 * 65535
        self.off_v = self.off_i
        self.first = True
        self.current_a = None
        self.voltage_v = None
        self.power_w = None
        self.ok = True
        self.forced = False  # the last reading came from a spoiled pass (all tries spoiled)
        self.fitted = 0  # spoiled passes read by the sine fit
        self.measured_ms = None

    def sample(self):
        """Fill the buffers: `samples` pairs evenly over `cycles` mains periods, with the
        time each pair was actually taken (an interrupt may delay a read). Returns the
        longest gap between pairs, in microseconds."""
        n = self.samples
        period_us = self.period_us
        step = period_us // n
        read_i = self.adc_i.read_u16
        read_v = self.adc_v.read_u16
        bi = self.buf_i
        bv = self.buf_v
        bt = self.buf_t
        t0 = time.ticks_us()
        prev = 0
        gap = 0
        for k in range(n):
            target = k * step
            while True:
                t = time.ticks_diff(time.ticks_us(), t0)
                if t >= target:
                    break
                if target - t > 200:
                    # sleep most of the wait: on a host this lets other threads run (the
                    # safety timer); on the board sleep_us is an exact busy wait anyway
                    time.sleep_us(target - t - 120)
            for _ in range(4):
                i = read_i()
                v = read_v()
                t2 = time.ticks_diff(time.ticks_us(), t0)
                if t2 - t <= PAIR_US:
                    break
                # held between the clock and the reads (an IRQ, a soft IRQ, another thread):
                # the pair is not from time t; read it again, now
                t = t2
            bi[k] = i
            bv[k] = v
            t = (t + t2) // 2
            bt[k] = t if t < 65535 else 65535  # array('H'): such a pass is not fitted
            if t - prev > gap:
                gap = t - prev
            prev = t
        return gap

    def compute(self, track=True):
        """RMS and power of the sampled buffers (time-weighted over the whole cycles, so a
        delayed read does not bias them); updates the DC offset tracking when `track` (a
        spoiled pass's mean is off: taken as the offset it would skew the good readings
        after it, an offset error e reading sqrt(rms^2 + e^2))."""
        n = self.samples
        bi = self.buf_i
        bv = self.buf_v
        bt = self.buf_t
        period = self.period_us
        # each pair stands for the time from the midpoint before it to the midpoint after
        # it; the window is whole cycles, so it wraps around (trapezoid on a periodic signal)
        sum_w = 0
        sum_i = 0
        sum_v = 0
        for k in range(n):
            w = self._weight(k, n, bt, period)
            sum_w += w
            sum_i += bi[k] * w
            sum_v += bv[k] * w
        mean_i = sum_i / sum_w
        mean_v = sum_v / sum_w
        if not track and not self.first:
            pass
        elif self.first or abs(mean_i - self.off_i) > 1000 or abs(mean_v - self.off_v) > 1000:
            # first measurement, or back from a failure: seed the offsets afresh
            self.off_i = mean_i
            self.off_v = mean_v
            self.first = False
        else:  # offset tracking: the mean over whole cycles is the DC offset
            self.off_i += (mean_i - self.off_i) * 0.5
            self.off_v += (mean_v - self.off_v) * 0.5
        oi = self.off_i
        ov = self.off_v
        sii = 0.0
        svv = 0.0
        siv = 0.0
        for k in range(n):
            w = self._weight(k, n, bt, period)
            di = bi[k] - oi
            dv = bv[k] - ov
            sii += di * di * w
            svv += dv * dv * w
            siv += di * dv * w
        # a pass stretched past its cycles (a long interrupt, a loaded host) can give a
        # negative weight; never let that raise inside the safety timer
        irms = math.sqrt(max(0.0, sii / sum_w)) * self.k_i if sum_w > 0 else 0.0
        vrms = math.sqrt(max(0.0, svv / sum_w)) * self.k_v if sum_w > 0 else 0.0
        power = siv / sum_w * self.k_i * self.k_v if sum_w > 0 else 0.0
        return irms, vrms, power

    def fit(self):
        """RMS and power of the sampled buffers' fundamental: least squares of
        x = a + b sin(wt) + c cos(wt) per channel at the pairs' own times, so a pass with
        gaps (spoiled) reads true as long as its samples spread over the cycle. None when
        they do not (the fit's normal matrix is near singular)."""
        n = self.samples
        bi = self.buf_i
        bv = self.buf_v
        bt = self.buf_t
        if bt[n - 1] >= 65535:
            return None  # held past the 16-bit times: their true times are lost
        w = 2 * math.pi * self.hz / 1000000
        # centred on the tracked offsets: a board's single-precision floats would lose the
        # small AC terms next to a 32768-count bias in the sums below
        oi = self.off_i
        ov = self.off_v
        ss = sc = cc = s1 = c1 = 0.0
        xi = xis = xic = xv = xvs = xvc = 0.0
        for k in range(n):
            ph = w * bt[k]
            sn = math.sin(ph)
            cs = math.cos(ph)
            s1 += sn
            c1 += cs
            ss += sn * sn
            sc += sn * cs
            cc += cs * cs
            i = bi[k] - oi
            v = bv[k] - ov
            xi += i
            xis += i * sn
            xic += i * cs
            xv += v
            xvs += v * sn
            xvc += v * cs
        # normal equations [[n, s1, c1], [s1, ss, sc], [c1, sc, cc]] (a, b, c) = (x, xs, xc)
        m11 = ss * cc - sc * sc
        m12 = s1 * cc - sc * c1
        m13 = s1 * sc - ss * c1
        det = n * m11 - s1 * m12 + c1 * m13
        if det < FIT_MIN_SPREAD * n * n * n:
            return None
        bi_, ci_ = self._solve_bc(det, n, s1, c1, ss, sc, cc, xi, xis, xic)
        bv_, cv_ = self._solve_bc(det, n, s1, c1, ss, sc, cc, xv, xvs, xvc)
        irms = math.sqrt((bi_ * bi_ + ci_ * ci_) / 2) * self.k_i
        vrms = math.sqrt((bv_ * bv_ + cv_ * cv_) / 2) * self.k_v
        power = (bi_ * bv_ + ci_ * cv_) / 2 * self.k_i * self.k_v
        return irms, vrms, power

    @staticmethod
    def _solve_bc(det, n, s1, c1, ss, sc, cc, x, xs, xc):
        """The sine and cosine coefficients (Cramer's rule on the 3x3 normal equations)."""
        b = (n * (xs * cc - sc * xc) - x * (s1 * cc - sc * c1) + c1 * (s1 * xc - xs * c1)) / det
        c = (n * (ss * xc - xs * sc) - s1 * (s1 * xc - xs * c1) + x * (s1 * sc - ss * c1)) / det
        return b, c

    @staticmethod
    def _weight(k, n, bt, period):
        before = bt[k - 1] if k > 0 else bt[n - 1] - period
        after = bt[k + 1] if k < n - 1 else bt[0] + period
        return after - before

    def measure(self):
        """One measurement; returns True if the front ends look alive."""
        forced = False
        for _ in range(3):  # an interrupt that held the CPU too long spoils a measurement
            # kept: no gap over a tenth of the window (a sixth read 2.5 % off) or two steps
            # (a short window), and inside the window (compute() wraps at its end)
            if self.sample() <= self.max_gap_us and self.buf_t[self.samples - 1] < self.period_us:
                break
            self.retries += 1
        else:
            # every pass had a gap over a tenth of the window: its time-weighted RMS would
            # be off by up to a third (a loaded host; on a board, an interrupt storm). The
            # sine fit reads it true if its samples spread over the cycle; if not, keep the
            # last good readings (none yet: none), for at most MAX_SPOILED measurements
            # (well inside the over-current grace), then use what there is
            readings = self.fit()
            if readings is None:
                self.spoiled += 1
                if self.spoiled <= MAX_SPOILED:
                    return self.ok
                forced = True
            else:
                self.fitted += 1
                self.spoiled = 0
                self.forced = False
                return self._take(readings)
        self.spoiled = 0
        self.forced = forced
        return self._take(self.compute(not forced))

    def _take(self, readings):
        """Keep a measurement's (I rms, V rms, P); False when it shows no mains."""
        irms, vrms, power = readings
        self.measured_ms = time.ticks_ms()
        if vrms < MIN_MAINS_V:
            # no mains seen: a broken voltage front end (or no supply at all)
            self.ok = False
            self.first = True  # its offsets mean nothing: re-seed when it comes back
            self.current_a = None
            self.voltage_v = None
            self.power_w = None
            return False
        self.ok = True
        if irms < NOISE_FLOOR_A:
            irms = 0.0
            power = 0.0
        if power < 0:
            power = 0.0
        self.current_a = irms
        self.voltage_v = vrms
        self.power_w = power
        return True


class Register:
    """The energy register (Wh): integrates power, persists with bounded wear."""

    def __init__(self, flash, name="energy.json", persist_wh=50.0, persist_min_s=60,
                 persist_max_s=900):
        self.flash = flash
        self.name = name
        self.persist_wh = persist_wh
        self.persist_min_s = persist_min_s
        self.persist_max_s = persist_max_s
        self.wh = 0.0
        self.saved_wh = 0.0
        self.saved_ms = time.ticks_ms()
        self.writes = 0
        self.load()

    def load(self):
        try:
            data = self.flash.read_json(self.name)
            self.wh = float(data.get("wh", 0.0))
        except (OSError, ValueError, AttributeError, TypeError):
            self.wh = 0.0
        self.saved_wh = self.wh

    def add(self, wh):
        if wh > 0:
            self.wh += wh
        self.maybe_save()

    def maybe_save(self):
        pending = self.wh - self.saved_wh
        if pending <= 0:
            return False
        age_s = time.ticks_diff(time.ticks_ms(), self.saved_ms) / 1000
        if (pending >= self.persist_wh and age_s >= self.persist_min_s) or age_s >= self.persist_max_s:
            return self.save()
        return False

    def save(self):
        if self.wh == self.saved_wh:
            return False
        try:
            self.flash.write_json(self.name, {"wh": round(self.wh, 3)})
        except OSError:
            return False  # a full flash keeps the register in RAM; retried next time
        self.saved_wh = self.wh
        self.saved_ms = time.ticks_ms()
        self.writes += 1
        return True
