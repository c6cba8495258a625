"""Host stand-in for MicroPython's `machine` module on a Raspberry Pi Pico W.

Pin, ADC, PWM, Timer, WDT, RTC, reset, soft_reset, reset_cause, unique_id, freq, idle,
disable_irq/enable_irq, with the rp2 port's names and behaviour, backed by a simulated
world (`simworld`). Runs on CPython and on the MicroPython Unix port.

Timers and the watchdog run on one background thread per process, outside the firmware's
event loop, as hardware timers do on the board.
"""

import _thread
import heapq
import sys

import simworld
from simworld import sleep_ms, ticks_diff, ticks_ms

PWRON_RESET = 1
WDT_RESET = 3
SOFT_RESET = 5  # the rp2 port reports a soft reset as PWRON after the VM restarts


def _print_exc(exc):
    if hasattr(sys, "print_exception"):
        sys.print_exception(exc)
    else:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)


class _Bound:
    """Mixin: the world a stand-in object belongs to (the process default unless bound)."""

    _world = None

    def _w(self):
        return self._world or simworld.current()


class Pin(_Bound):
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    ALT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id, mode=-1, pull=-1, value=None):
        if isinstance(id, Pin):
            id = id.id
        if not (isinstance(id, int) and 0 <= id <= 29) and id not in ("LED", "WL_GPIO0"):
            raise ValueError("invalid pin")
        self.id = id
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        w = self._w()
        if pull != -1:
            w.pin_pulls[self.id] = {1: "up", 2: "down"}.get(pull)
        if mode == Pin.OUT or mode == Pin.OPEN_DRAIN:
            self.mode = mode
            w.pin_output(self.id, value if value is not None else w.pins.get(self.id) or 0)
        elif mode != -1:
            self.mode = mode
            if mode == Pin.IN:
                w.pins[self.id] = None

    def value(self, v=None):
        w = self._w()
        if v is None:
            return w.pin_input(self.id)
        w.pin_output(self.id, v)

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def high(self):
        self.value(1)

    def low(self):
        self.value(0)

    def toggle(self):
        self.value(0 if self._w().pin_input(self.id) else 1)

    def irq(self, handler=None, trigger=12, hard=False):
        # Edges on simulated inputs are not generated; the firmware polls with a Timer.
        self._irq = (handler, trigger)
        return None

    def __repr__(self):
        return "Pin(%s)" % (self.id,)


class ADC(_Bound):
    CORE_TEMP = 4

    def __init__(self, pin):
        if isinstance(pin, Pin):
            pin = pin.id
        if isinstance(pin, int) and 26 <= pin <= 29:
            channel = pin - 26
        elif isinstance(pin, int) and 0 <= pin <= 4:
            channel = pin
        else:
            raise ValueError("Pin doesn't have ADC capabilities")
        self.channel = channel

    def read_u16(self):
        return self._w().adc_u16(self.channel)


class PWM(_Bound):
    def __init__(self, pin, freq=None, duty_u16=None, duty_ns=None, invert=False):
        if not isinstance(pin, Pin):
            pin = Pin(pin)
        self.pin = pin
        self._freq = 1000
        self._duty = 0
        self._active = False
        self.init(freq=freq, duty_u16=duty_u16, duty_ns=duty_ns)

    def init(self, freq=None, duty_u16=None, duty_ns=None, invert=False):
        if freq is not None:
            self.freq(freq)
        if duty_u16 is not None:
            self.duty_u16(duty_u16)
        if duty_ns is not None:
            self.duty_ns(duty_ns)

    def freq(self, value=None):
        if value is None:
            return self._freq
        if not 8 <= value <= 62500000:
            raise ValueError("freq too small")
        self._freq = int(value)
        self._push()

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        self._duty = min(65535, max(0, int(value)))
        self._active = True
        self._push()

    def duty_ns(self, value=None):
        period_ns = 1000000000 // self._freq
        if value is None:
            return self._duty * period_ns // 65535
        self.duty_u16(value * 65535 // period_ns)

    def deinit(self):
        self._active = False
        self._w().set_pwm(self.pin.id, None, None)

    def _push(self):
        if self._active:
            self._w().set_pwm(self.pin.id, self._freq, self._duty)


class _TimerService:
    """One thread that fires every Timer and checks every WDT of the process.

    Deadlines sit in a heap (a fleet simulator has thousands of timers); a re-armed or
    stopped timer leaves a stale entry that is skipped by its generation number.
    """

    def __init__(self):
        self.heap = []
        self.watchdogs = []
        self.lock = _thread.allocate_lock()
        self.running = False
        self.seq = 0
        self._last = ticks_ms()
        self._mono = 0

    def now(self):
        """Milliseconds that never wrap (ticks_ms wraps after 2**30 ms on MicroPython)."""
        with self.lock:
            t = ticks_ms()
            self._mono += ticks_diff(t, self._last)
            self._last = t
            return self._mono

    def _start(self):
        if not self.running:
            self.running = True
            _thread.start_new_thread(self._loop, ())

    def schedule(self, timer, deadline):
        with self.lock:
            self.seq += 1
            heapq.heappush(self.heap, (deadline, self.seq, timer, timer._generation))
            self._start()

    def add_wdt(self, wdt):
        with self.lock:
            self.watchdogs.append(wdt)
            self._start()

    def _loop(self):
        while True:
            now = self.now()
            due = []
            with self.lock:
                while self.heap and self.heap[0][0] <= now:
                    entry = heapq.heappop(self.heap)
                    if entry[3] == entry[2]._generation:
                        due.append(entry)
                expired = [d for d in self.watchdogs if d._deadline <= now]
                for wdt in expired:
                    self.watchdogs.remove(wdt)
            for wdt in expired:
                wdt._expire()
            for entry in due:
                entry[2]._fire(entry[0], now)
            sleep_ms(1)


_service = _TimerService()


class Timer(_Bound):
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, mode=PERIODIC, period=-1, freq=-1, callback=None, tick_hz=1000):
        self._callback = None
        self._period = 0
        self._generation = 0
        if callback is not None or period != -1 or freq != -1:
            self.init(mode=mode, period=period, freq=freq, callback=callback)

    def init(self, mode=PERIODIC, period=-1, freq=-1, callback=None, tick_hz=1000):
        if freq != -1:
            period = max(1, int(1000 / freq))
        if period < 0:
            period = 0xFFFFFFFF
        self._mode = mode
        self._period = max(1, int(period))
        self._callback = callback
        self._generation += 1
        _service.schedule(self, _service.now() + self._period)

    def deinit(self):
        self._generation += 1

    def _fire(self, deadline, now):
        if self._mode == Timer.PERIODIC:
            nxt = deadline + self._period
            if nxt <= now:
                nxt = now + self._period  # skipped ticks are lost, as on the board
            _service.schedule(self, nxt)
        cb = self._callback
        if cb is not None:
            world = self._w()
            if world is not None:
                world.timer_fired(now - deadline)
            try:
                cb(self)
            except Exception as exc:  # the board prints IRQ errors and carries on
                print("Uncaught exception in IRQ callback handler")
                _print_exc(exc)


class WDT(_Bound):
    def __init__(self, id=0, timeout=5000):
        if not 1 <= timeout <= 8388:
            raise ValueError("timeout exceeds 8388")
        self._timeout = timeout
        self._deadline = _service.now() + timeout
        _service.add_wdt(self)

    def feed(self):
        self._deadline = _service.now() + self._timeout

    def _expire(self):
        self._w().request_reset("watchdog")


def _days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


class RTC(_Bound):
    """The real-time clock. The host's clock is the truth; setting the RTC records the
    offset the firmware asked for, which `datetime()` then reports."""

    def __init__(self, id=0):
        pass

    def datetime(self, value=None):
        """(year, month, day, weekday, hours, minutes, seconds, subseconds)."""
        import time

        w = self._w()
        if value is None:
            t = time.gmtime(int(time.time() + getattr(w, "rtc_offset", 0)))
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        y, mo, d, wd, h, mi, s = value[:7]
        target = _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
        w.rtc_offset = target - time.time()


def reset():
    simworld.current().request_reset("hard")
    while True:  # a reset never returns
        sleep_ms(1000)


def soft_reset():
    simworld.current().request_reset("soft")
    while True:
        sleep_ms(1000)


def reset_cause():
    return getattr(simworld.current(), "reset_cause", PWRON_RESET)


def unique_id(world=None):
    name = (world or simworld.current()).name.encode()
    out = bytearray(8)
    for i, b in enumerate(name):
        out[i % 8] = (out[i % 8] * 31 + b) & 0xFF
    return bytes(out)


_freq = [125000000]


def freq(hz=None):
    if hz is None:
        return _freq[0]
    _freq[0] = hz


def idle():
    sleep_ms(1)


def disable_irq():
    return 0


def enable_irq(state=0):
    return None


def bind(world):
    """A `machine`-like namespace whose Pin/ADC/PWM/... belong to `world` (fleet simulator)."""

    class Namespace:
        pass

    ns = Namespace()
    for name, cls in (("Pin", Pin), ("ADC", ADC), ("PWM", PWM), ("Timer", Timer), ("WDT", WDT), ("RTC", RTC)):
        setattr(ns, name, type(name, (cls,), {"_world": world}))
    ns.reset = lambda: world.request_reset("hard")
    ns.soft_reset = lambda: world.request_reset("soft")
    ns.reset_cause = lambda: getattr(world, "reset_cause", PWRON_RESET)
    ns.unique_id = lambda: unique_id(world)
    ns.freq = freq
    ns.idle = idle
    ns.disable_irq = disable_irq
    ns.enable_irq = enable_irq
    ns.PWRON_RESET = PWRON_RESET
    ns.WDT_RESET = WDT_RESET
    return ns
