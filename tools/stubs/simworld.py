"""The simulated world behind the hardware stand-ins.

One `World` is one charging station's surroundings: the EV on the cable, the mains, the
DHT11 in the enclosure, the RP2040's die, the Wi-Fi access point. The stand-in modules
(`machine`, `dht`, `network`, `ntptime`) read from and write to a world; the firmware never
sees it directly. Everything is computed from the time the firmware reads it at, so the
control-pilot square wave and the mains sine waves look as an ADC would see them.

Written in the subset of Python that runs on both CPython and the MicroPython Unix port.
A process normally has one world (`current()`), the fleet simulator has thousands: each
stand-in object is bound to the world it was created for.
"""

import math

try:
    from time import sleep_ms, ticks_diff, ticks_ms, ticks_us  # MicroPython
except ImportError:  # CPython without the board runner's additions
    import time as _time

    def ticks_us():
        return _time.monotonic_ns() // 1000

    def ticks_ms():
        return _time.monotonic_ns() // 1000000

    def ticks_diff(a, b):
        return a - b

    def sleep_ms(ms):
        _time.sleep(ms / 1000)


# Default wiring of a Pico W board (docs/hardware.md). The firmware's config defaults are
# the same numbers; a board's config.json may move them and the runner wires the world
# from that config.
DEFAULT_WIRING = {
    "relay": 18,
    "pilot_pwm": 16,
    "pilot_adc": 26,
    "current_adc": 27,
    "voltage_adc": 28,
    "dht": 15,
    "safe_mode": 22,
    "led": "LED",
}

# Analogue front ends: the ADC sees 0..3.3 V.
ADC_VREF = 3.3
PILOT_BIAS_V = 1.65  # pilot divider: 0 V on the pilot reads 1.65 V
PILOT_V_PER_ADC_V = 8.0  # +-13.2 V pilot spans the ADC range
METER_BIAS_V = 1.65
DEFAULT_AMPS_PER_ADC_V = 30.0  # SCT-013-030 with burden: 30 A rms per volt
DEFAULT_VOLTS_PER_ADC_V = 250.0  # ZMPT101B trimmed: 250 V per volt

# Pico W CYW43 link status codes as `network.WLAN.status()` reports them.
LINK_DOWN = 0
LINK_JOIN = 1
LINK_NOIP = 2
LINK_UP = 3
LINK_FAIL = -1
LINK_NONET = -2
LINK_BADAUTH = -3

_current = [None]


def current():
    """The process's default world (the single board of a board runner)."""
    if _current[0] is None:
        _current[0] = World()
    return _current[0]


def set_current(world):
    _current[0] = world
    return world


class Rng:
    """A small seeded generator (xorshift32): MicroPython's `random` has no instances."""

    def __init__(self, seed=None):
        if seed is None:
            seed = ticks_us()
        self.state = (int(seed) * 2654435761 + 1) & 0xFFFFFFFF or 1

    def random(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x / 4294967296.0

    def uniform(self, a, b):
        return a + (b - a) * self.random()


# The EV's reading of the pilot duty, IEC 61851-1 Annex A (the maximum current table, as
# EVSE testers apply it): rows (lowest duty %, that bound included, highest duty %, that
# bound included, amps per duty %, amps at 0 %). Below 8 %, between the rows' bands and
# above 97 % nothing may be drawn (3..7 %: digital communication, not a current). The
# EV's side is written here from the standard, not taken from the firmware, so a wrong
# table in firmware/lib/pilot.py cannot pass by agreeing with itself.
IEC61851_DUTY_TO_AMPS = (
    (8.0, True, 10.0, False, 0.0, 6.0),  # 8 % <= d < 10 %: 6 A
    (10.0, True, 85.0, True, 0.6, 0.0),  # 10 % <= d <= 85 %: d x 0.6
    (85.0, False, 96.0, True, 2.5, -160.0),  # 85 % < d <= 96 %: (d - 64) x 2.5
    (96.0, False, 97.0, True, 0.0, 80.0),  # 96 % < d <= 97 %: 80 A
)


def offered_amps(duty):
    """IEC 61851 current offered by a pilot duty cycle (0..1); 0 if no valid PWM."""
    pct = duty * 100.0
    for low, low_in, high, high_in, slope, at_zero in IEC61851_DUTY_TO_AMPS:
        if (pct > low or (low_in and pct == low)) and (pct < high or (high_in and pct == high)):
            return slope * pct + at_zero
    return 0.0


class World:
    """The surroundings of one charging station."""

    def __init__(self, wiring=None, seed=None, name="PICO-0001", dht_blocking_ms=270):
        self.wiring = dict(DEFAULT_WIRING)
        if wiring:
            self.wiring.update(wiring)
        self.name = name
        self.rng = Rng(seed)
        # calibration of the metering front end (config may override)
        self.amps_per_adc_v = DEFAULT_AMPS_PER_ADC_V
        self.volts_per_adc_v = DEFAULT_VOLTS_PER_ADC_V
        # the EV
        self.ev_plugged = False
        self.ev_ready = True  # wants energy (moves to state C when offered PWM)
        self.ev_suspended = False  # pauses itself (stays in B with PWM on: SuspendedEV)
        self.ev_ventilation = False  # asks for ventilation (state D)
        self.ev_diode_ok = True
        self.ev_demand_a = 16.0
        self.ev_battery_wh = None  # None: unlimited; else charging stops when full
        self.pilot_short = False  # state E: pilot shorted to PE
        # the pilot waveform's frequency as the ADC sees it; None: the PWM's own (1 kHz).
        # The fleet simulator speeds it up, as it does the mains, so a pilot read window
        # can be a tenth as long (the duty, hence the offered current, is unchanged)
        self.pilot_hz = None
        # mains and meter
        self.mains_v = 230.0
        self.mains_hz = 50.0
        self.meter_broken = False
        self.meter_noise = 0.002  # fraction of full scale
        self.relay_welded = False
        # environment
        self.ambient_c = 22.0
        self.humidity = 45.0
        self.mcu_c = 27.0
        self.dht_fault = None  # None, "timeout" or "checksum"
        self.dht_error_rate = 0.0  # probability that one read fails on its own
        self.dht_blocking_ms = dht_blocking_ms
        # Wi-Fi
        self.ap_ssid = None  # None: any SSID joins
        self.ap_password = None  # None: any password joins
        self.wifi_up = True
        self.wifi_join_ms = 800
        self.rssi = -58
        # outputs driven by the firmware
        self.pins = {}  # pin id -> output level (0/1) or None if input
        self.pin_pulls = {}
        self.inputs = {}  # pin id -> level forced by the world (e.g. safe-mode jumper)
        self.pwm = {}  # pin id -> (freq, duty_u16)
        # bookkeeping
        self.energy_wh = 0.0  # energy actually delivered to the EV
        self._last_us = ticks_us()
        self.relay_open_events = []  # (ticks_ms when the relay opened), bounded
        self.timer_fires = []  # ticks_ms of the last machine.Timer callbacks, bounded
        # the longest a machine.Timer callback ran behind its deadline (ms): the host holding
        # the board's process (the timer has a thread of its own, which the firmware's event
        # loop does not hold up), what a check on the board's wall-clock times allows for
        self.timer_late_max_ms = 0
        self.unplugged_ms = None  # ticks_ms when the EV was last unplugged (the world's clock)
        self.reset_handler = None  # called with a reason by machine.reset / WDT
        self.console = None  # optional sink for stand-in messages

    # -- the EV and the pilot ------------------------------------------------------
    def relay_closed(self):
        return self.pins.get(self.wiring["relay"]) == 1

    def pilot_duty(self):
        """Duty (0..1) the EVSE drives on the pilot; a constant +12 V reads as 1.0."""
        pin = self.wiring["pilot_pwm"]
        if pin in self.pwm:
            freq, duty = self.pwm[pin]
            return duty / 65535.0
        level = self.pins.get(pin)
        if level is None:
            return 1.0
        return 1.0 if level else 0.0

    def pilot_state(self):
        """IEC 61851 state the pilot is in (A..F) given the EV and the EVSE's PWM."""
        duty = self.pilot_duty()
        if duty <= 0.0:
            return "F"
        if self.pilot_short:
            return "E"
        if not self.ev_plugged:
            return "A"
        pwm_on = offered_amps(duty) > 0
        if pwm_on and self.ev_ready and not self.ev_suspended and not self._battery_full():
            return "D" if self.ev_ventilation else "C"
        return "B"

    _HIGH = {"A": 12.0, "B": 9.0, "C": 6.0, "D": 3.0, "E": 0.0, "F": -12.0}

    def pilot_levels(self):
        state = self.pilot_state()
        high = self._HIGH[state]
        if state == "E":
            return 0.0, 0.0
        if state in ("B", "C", "D") and not self.ev_diode_ok:
            return high, -high
        return high, -12.0

    def pilot_volts(self, now_us=None):
        if now_us is None:
            now_us = ticks_us()
        high, low = self.pilot_levels()
        duty = self.pilot_duty()
        pin = self.wiring["pilot_pwm"]
        freq = self.pilot_hz or (self.pwm[pin][0] if pin in self.pwm else 1000)
        period_us = 1000000 // max(1, freq)
        return high if (now_us % period_us) < duty * period_us else low

    def _battery_full(self):
        return self.ev_battery_wh is not None and self.energy_wh >= self.ev_battery_wh

    def current_rms(self):
        """Current the EV draws now (A rms)."""
        self._integrate()
        return self._current_now()

    def _current_now(self):
        if not self.ev_plugged:
            return 0.0
        if not (self.relay_closed() or self.relay_welded):
            return 0.0
        if self.pilot_state() not in ("C", "D"):
            return 0.0
        offered = offered_amps(self.pilot_duty())
        return max(0.0, min(self.ev_demand_a, offered))

    def power_w(self):
        return self.current_rms() * self.mains_v

    def _integrate(self):
        now = ticks_us()
        dt = ticks_diff(now, self._last_us)
        if dt > 0:
            self.energy_wh += self._current_now() * self.mains_v * dt / 3.6e9
            self._last_us = now

    # -- analogue channels ----------------------------------------------------------
    def adc_volts(self, channel, now_us=None):
        """Voltage at ADC input `channel` (0..3 = GP26..29, 4 = temperature sensor)."""
        if now_us is None:
            now_us = ticks_us()
        if channel == 4:
            return 0.706 - (self.mcu_c - 27.0) * 0.001721
        gp = 26 + channel
        w = self.wiring
        if gp == w["pilot_adc"]:
            v = PILOT_BIAS_V + self.pilot_volts(now_us) / PILOT_V_PER_ADC_V
        elif gp == w["current_adc"]:
            if self.meter_broken:
                return 0.0
            self._integrate()
            amps = self._current_now()
            phase = 2 * math.pi * self.mains_hz * now_us / 1e6
            v = METER_BIAS_V + amps * math.sqrt(2) * math.sin(phase) / self.amps_per_adc_v
            v += self.rng.uniform(-1, 1) * self.meter_noise * ADC_VREF
        elif gp == w["voltage_adc"]:
            if self.meter_broken:
                return 0.0
            phase = 2 * math.pi * self.mains_hz * now_us / 1e6
            v = METER_BIAS_V + self.mains_v * math.sqrt(2) * math.sin(phase) / self.volts_per_adc_v
            v += self.rng.uniform(-1, 1) * self.meter_noise * ADC_VREF
        else:
            v = 0.0
        return min(ADC_VREF, max(0.0, v))

    def adc_u16(self, channel):
        """What `ADC.read_u16()` returns: the 12-bit conversion scaled to 16 bits."""
        raw12 = int(self.adc_volts(channel) / ADC_VREF * 4095 + 0.5)
        raw12 = min(4095, max(0, raw12))
        return (raw12 << 4) | (raw12 >> 8)

    # -- digital pins ----------------------------------------------------------------
    def pin_output(self, pin_id, level):
        was_closed = self.relay_closed()
        self._integrate()
        self.pins[pin_id] = 1 if level else 0
        if was_closed and not self.relay_closed():
            events = self.relay_open_events
            events.append(ticks_ms())
            if len(events) > 32:
                events.pop(0)

    def timer_fired(self, late_ms=0):
        """A machine.Timer callback runs now, `late_ms` behind its deadline: tests tell the
        host's stalls of the board's timer from the firmware's own latency by these."""
        if late_ms > self.timer_late_max_ms:
            self.timer_late_max_ms = late_ms
        fires = self.timer_fires
        fires.append(ticks_ms())
        if len(fires) > 64:
            fires.pop(0)

    def pin_input(self, pin_id):
        if pin_id in self.inputs:
            return self.inputs[pin_id]
        if self.pins.get(pin_id) is not None:
            return self.pins[pin_id]
        return 1 if self.pin_pulls.get(pin_id) == "up" else 0

    def set_pwm(self, pin_id, freq, duty_u16):
        self._integrate()
        if freq is None:
            self.pwm.pop(pin_id, None)
        else:
            self.pwm[pin_id] = (freq, duty_u16)

    # -- the DHT11 ---------------------------------------------------------------------
    def dht_sample(self):
        """One conversion: (humidity %, temperature C) as the sensor's integer bytes, or
        the name of the fault that spoils it."""
        if self.dht_fault:
            return self.dht_fault
        if self.dht_error_rate and self.rng.random() < self.dht_error_rate:
            return "timeout" if self.rng.random() < 0.5 else "checksum"
        t = self.ambient_c + self.rng.uniform(-0.6, 0.6)
        rh = self.humidity + self.rng.uniform(-1.5, 1.5)
        return (int(min(99, max(0, rh)) + 0.5), int(min(60, max(0, t)) + 0.5))

    # -- control ---------------------------------------------------------------------
    def snapshot(self):
        """Everything a test or a person may want to see, JSON-ready."""
        self._integrate()
        return {
            "name": self.name,
            "ev": {
                "plugged": self.ev_plugged,
                "ready": self.ev_ready,
                "suspended": self.ev_suspended,
                "ventilation": self.ev_ventilation,
                "diode_ok": self.ev_diode_ok,
                "demand_a": self.ev_demand_a,
                "battery_wh": self.ev_battery_wh,
            },
            "pilot": {
                "state": self.pilot_state(),
                "duty": round(self.pilot_duty(), 4),
                "offered_a": round(offered_amps(self.pilot_duty()), 2),
                "short": self.pilot_short,
            },
            "relay_closed": self.relay_closed(),
            "relay_welded": self.relay_welded,
            "current_a": round(self._current_now(), 3),
            "power_w": round(self._current_now() * self.mains_v, 1),
            "energy_wh": round(self.energy_wh, 4),
            "mains_v": self.mains_v,
            "meter_broken": self.meter_broken,
            "ambient_c": self.ambient_c,
            "humidity": self.humidity,
            "mcu_c": self.mcu_c,
            "dht_fault": self.dht_fault,
            "dht_error_rate": self.dht_error_rate,
            "wifi_up": self.wifi_up,
            "rssi": self.rssi,
            "relay_open_events": list(self.relay_open_events),
            "unplugged_ms": self.unplugged_ms,
            "timer_fires": list(self.timer_fires),
            "timer_late_max_ms": self.timer_late_max_ms,
            "ticks_ms": ticks_ms(),
        }

    SETTABLE = {
        "ev_plugged": bool,
        "ev_ready": bool,
        "ev_suspended": bool,
        "ev_ventilation": bool,
        "ev_diode_ok": bool,
        "ev_demand_a": float,
        "ev_battery_wh": float,
        "pilot_short": bool,
        "mains_v": float,
        "mains_hz": float,
        "pilot_hz": float,
        "meter_broken": bool,
        "relay_welded": bool,
        "ambient_c": float,
        "humidity": float,
        "mcu_c": float,
        "dht_fault": str,
        "dht_error_rate": float,
        "dht_blocking_ms": int,
        "wifi_up": bool,
        "rssi": int,
        "ap_ssid": str,
        "ap_password": str,
        "energy_wh": float,
    }

    def set(self, key, value):
        """Change one world variable; raises ValueError for an unknown key or bad value."""
        kind = self.SETTABLE.get(key)
        if kind is None:
            raise ValueError("unknown world variable: %s" % key)
        if value is not None:
            if kind is bool and not isinstance(value, bool):
                raise ValueError("%s takes true or false" % key)
            value = kind(value)
        elif key not in ("dht_fault", "ev_battery_wh", "ap_ssid", "ap_password"):
            raise ValueError("%s cannot be null" % key)
        if key == "dht_fault" and value not in (None, "timeout", "checksum"):
            raise ValueError("dht_fault is null, 'timeout' or 'checksum'")
        self._integrate()
        if key == "ev_plugged" and self.ev_plugged and not value:
            self.unplugged_ms = ticks_ms()
        setattr(self, key, value)
        return value

    def settings(self):
        """The world variables a test has set: what a board reset must not forget."""
        out = {}
        for key in self.SETTABLE:
            out[key] = getattr(self, key)
        return out

    def set_input(self, pin_id, level):
        self.inputs[pin_id] = level

    def request_reset(self, reason):
        handler = self.reset_handler
        if handler is None:
            raise SystemExit("board reset (%s) with no reset handler" % reason)
        handler(reason)
