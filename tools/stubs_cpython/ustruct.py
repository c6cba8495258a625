"""CPython alias of MicroPython's `ustruct`."""

from struct import *  # noqa: F401,F403
