"""Give CPython the few MicroPython built-ins the firmware uses, so the same firmware
source runs unchanged on the host (board runner, fleet simulator).

Adds `time.ticks_ms/ticks_us/ticks_add/ticks_diff/sleep_ms/sleep_us`,
`asyncio.sleep_ms`, `sys.print_exception`, and puts this directory (with `micropython`,
`usocket`, `ustruct`, `ubinascii`) on `sys.path`. Idempotent. Never imported on
MicroPython, where these exist natively.
"""

import asyncio
import os
import sys
import time
import traceback

_TICKS_PERIOD = 1 << 30
_TICKS_MAX = _TICKS_PERIOD - 1
_TICKS_HALFPERIOD = _TICKS_PERIOD // 2


def ticks_ms():
    return (time.monotonic_ns() // 1_000_000) & _TICKS_MAX


def ticks_us():
    return (time.monotonic_ns() // 1_000) & _TICKS_MAX


def ticks_add(ticks, delta):
    return (ticks + delta) & _TICKS_MAX


def ticks_diff(end, start):
    # Same wrap-around arithmetic as MicroPython's small-int ticks.
    return ((end - start + _TICKS_HALFPERIOD) & _TICKS_MAX) - _TICKS_HALFPERIOD


def sleep_ms(ms):
    time.sleep(ms / 1000)


def sleep_us(us):
    time.sleep(us / 1_000_000)


def print_exception(exc, file=None):
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=file or sys.stdout)


async def asyncio_sleep_ms(ms):
    await asyncio.sleep(ms / 1000)


def install():
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    for name, fn in (("ticks_ms", ticks_ms), ("ticks_us", ticks_us), ("ticks_add", ticks_add),
                     ("ticks_diff", ticks_diff), ("sleep_ms", sleep_ms), ("sleep_us", sleep_us)):
        if not hasattr(time, name):
            setattr(time, name, fn)
    if not hasattr(sys, "print_exception"):
        sys.print_exception = print_exception
    if not hasattr(asyncio, "sleep_ms"):
        asyncio.sleep_ms = asyncio_sleep_ms


install()
