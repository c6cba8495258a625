"""CPython stand-in for MicroPython's `micropython` module (host runs only)."""

import sys


def const(value):
    return value


def schedule(func, arg):
    func(arg)


def opt_level(level=None):
    return 0 if level is None else None


def alloc_emergency_exception_buf(size):
    return None


def mem_info(verbose=False):
    print("mem: not measured on CPython (%s)" % sys.implementation.name)


def heap_lock():
    return 0


def heap_unlock():
    return 0
