"""Waiting for a condition instead of sleeping: the one polling loop the tests share.

A test waits for what it needs (a row stored, a log line, a link up) and goes on the
moment it holds; the timeout only bounds a failing test, so it can be generous for a
loaded machine without slowing a passing one.
"""

from __future__ import annotations

import time


def wait_until(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.05):
    """Call `predicate` until it returns something true, and return that. After `timeout`
    seconds (monotonic clock) raise AssertionError naming `what` and the last value.
    `predicate` may itself raise to end the wait early (a helper whose peer failed)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout} s (last: {value!r})")
        time.sleep(interval)
