"""Environment sensors: the DHT11 in the enclosure and the RP2040's own temperature.

DHT11 (GP15): at most one read per `interval_ms` (never below 2 s, the sensor's own
limit). A failed read (`OSError` ETIMEDOUT: no answer; `Exception("checksum error")`: a
garbled frame) is counted and retried at the next allowed slot, never raised. The last
good value is kept with its age; older than `stale_ms` it is reported as stale (`None`).
The DHT11 hands back the conversion it took at the previous start signal, so a value is
one interval old by nature.

RP2040 temperature: ADC4, T = 27 - (V - 0.706) / 0.001721, averaged over a few reads.
"""

import time

DHT_MIN_INTERVAL_MS = 2000


class Dht11:
    def __init__(self, dht_mod, machine, pin, interval_ms=5000, offset_c=0.0, stale_ms=None):
        self.sensor = dht_mod.DHT11(machine.Pin(pin))
        self.interval_ms = max(DHT_MIN_INTERVAL_MS, int(interval_ms))
        self.stale_ms = stale_ms or 3 * self.interval_ms + 1000
        self.offset_c = offset_c
        self.t = None
        self.rh = None
        self.read_ms = None  # when the last good value came
        self.tried_ms = None  # when the sensor was last asked
        self.reads = 0
        self.timeouts = 0
        self.checksum_errors = 0
        self.other_errors = 0
        self.consecutive_errors = 0
        self.last_error = None

    def due(self, now=None):
        if self.tried_ms is None:
            return True
        if now is None:
            now = time.ticks_ms()
        return time.ticks_diff(now, self.tried_ms) >= self.interval_ms

    def poll(self, now=None):
        """Read the sensor if its interval has passed; True if a new value came."""
        if now is None:
            now = time.ticks_ms()
        if not self.due(now):
            return False
        self.tried_ms = now
        try:
            self.sensor.measure()
            t = self.sensor.temperature()
            rh = self.sensor.humidity()
        except OSError as exc:
            self.timeouts += 1
            self._failed("timeout (%s)" % (exc.args[0] if exc.args else exc))
            return False
        except Exception as exc:  # the driver raises a plain Exception on a bad checksum
            text = str(exc)
            if "checksum" in text:
                self.checksum_errors += 1
                self._failed("checksum error")
            else:
                self.other_errors += 1
                self._failed(text or type(exc).__name__)
            return False
        self.reads += 1
        self.consecutive_errors = 0
        self.t = t + self.offset_c
        self.rh = rh
        self.read_ms = time.ticks_ms()
        return True

    def _failed(self, text):
        self.consecutive_errors += 1
        self.last_error = text

    def age_ms(self):
        if self.read_ms is None:
            return None
        return time.ticks_diff(time.ticks_ms(), self.read_ms)

    def stale(self):
        age = self.age_ms()
        return age is None or age > self.stale_ms

    def temperature(self):
        return None if self.stale() else self.t

    def humidity(self):
        return None if self.stale() else self.rh

    def state(self):
        """'ok', 'stale' (last value too old) or 'none' (never read)."""
        if self.read_ms is None:
            return "none"
        return "stale" if self.stale() else "ok"


class McuTemp:
    def __init__(self, machine, offset_c=0.0, reads=4):
        self.adc = machine.ADC(4)
        self.offset_c = offset_c
        self.reads = reads
        self.value = None

    def read(self):
        total = 0
        for _ in range(self.reads):
            total += self.adc.read_u16()
        volts = total / self.reads * 3.3 / 65535
        self.value = 27 - (volts - 0.706) / 0.001721 + self.offset_c
        return self.value
