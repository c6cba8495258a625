"""Host stand-in for MicroPython's `dht` module (DHT11 and DHT22 on the rp2 port).

Behaves like the real sensor: `measure()` blocks for the conversion, hands back the
*previous* conversion (the DHT11 sends the result it took at the last start signal), raises
`OSError(ETIMEDOUT)` when the sensor does not answer (unplugged, broken, or polled again
sooner than it can convert) and `Exception("checksum error")` on a garbled frame.
"""

import simworld
from simworld import sleep_ms, ticks_diff, ticks_ms

ETIMEDOUT = 110
MIN_INTERVAL_MS = 1000  # the DHT11 does not answer a start signal sooner than this


class DHTBase:
    _world = None

    def __init__(self, pin):
        self.pin = pin
        self.buf = bytearray(5)
        self._latched = None  # conversion taken at the previous start signal
        self._last_ms = None

    def _w(self):
        return self._world or simworld.current()

    def measure(self):
        w = self._w()
        now = ticks_ms()
        if w.dht_blocking_ms:
            sleep_ms(w.dht_blocking_ms)
        if self._last_ms is not None and ticks_diff(now, self._last_ms) < MIN_INTERVAL_MS:
            raise OSError(ETIMEDOUT)
        self._last_ms = now
        sample = w.dht_sample()
        if sample == "timeout":
            raise OSError(ETIMEDOUT)
        previous = self._latched if self._latched is not None else sample
        self._latched = sample
        if sample == "checksum" or previous == "checksum":
            raise Exception("checksum error")
        if previous == "timeout":
            previous = sample
        self._encode(previous)

    def _encode(self, sample):
        rh, t = sample
        buf = self.buf
        buf[0] = rh
        buf[1] = 0
        buf[2] = t
        buf[3] = 0
        buf[4] = (buf[0] + buf[1] + buf[2] + buf[3]) & 0xFF


class DHT11(DHTBase):
    def humidity(self):
        return self.buf[0]

    def temperature(self):
        return self.buf[2]


class DHT22(DHTBase):
    def humidity(self):
        return (self.buf[0] << 8 | self.buf[1]) * 0.1

    def temperature(self):
        t = ((self.buf[2] & 0x7F) << 8 | self.buf[3]) * 0.1
        if self.buf[2] & 0x80:
            t = -t
        return t

    def _encode(self, sample):
        rh, t = sample
        rh10 = int(rh * 10)
        t10 = int(t * 10)
        buf = self.buf
        buf[0] = rh10 >> 8
        buf[1] = rh10 & 0xFF
        buf[2] = t10 >> 8
        buf[3] = t10 & 0xFF
        buf[4] = (buf[0] + buf[1] + buf[2] + buf[3]) & 0xFF


def bind(world):
    """A `dht`-like namespace whose sensors belong to `world` (fleet simulator)."""

    class Namespace:
        pass

    ns = Namespace()
    ns.DHT11 = type("DHT11", (DHT11,), {"_world": world})
    ns.DHT22 = type("DHT22", (DHT22,), {"_world": world})
    return ns
