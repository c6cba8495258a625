"""Host stand-in for MicroPython's `ntptime` module.

`time()` answers the host's UTC clock as NTP would; `settime()` sets the board's RTC from
it. Without Wi-Fi both fail with `OSError(ETIMEDOUT)` after `timeout` seconds, like the
real module's socket does.
"""

import simworld

host = "pool.ntp.org"
timeout = 1
ETIMEDOUT = 110


def time(world=None):
    import time as _time

    w = world or simworld.current()
    if not w.wifi_up:
        _time.sleep(min(timeout, 0.05))
        raise OSError(ETIMEDOUT)
    return int(_time.time())


def settime(world=None):
    import time as _time

    t = time(world)
    tm = _time.gmtime(t)
    import machine

    rtc = machine.bind(world).RTC() if world is not None else machine.RTC()
    rtc.datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))


def bind(world):
    """An `ntptime`-like namespace bound to `world` (fleet simulator)."""

    class Namespace:
        pass

    ns = Namespace()
    ns.host = host
    ns.timeout = timeout
    ns.time = lambda: time(world)
    ns.settime = lambda: settime(world)
    return ns
