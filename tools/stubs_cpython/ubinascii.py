"""CPython alias of MicroPython's `ubinascii`."""

from binascii import *  # noqa: F401,F403
