"""How fast this host is right now, and how many pytest-xdist workers it can carry.

The suite was tuned on one machine; CI's is another of the same size, maybe busier. Its
board simulations sample a 50 Hz mains wave on the wall clock and its servers answer
within timeouts, so a host that runs too many of them at once reads wrong numbers, not
just slow ones. Before the workers start (`pytest -n auto`, what `make test` runs), the
controller measures two things on its own clock:

- **CPU share**: the fraction of one core a busy loop gets over a short window (1.0 on an
  idle host, about 0.5 with another busy process on every core);
- **scheduling lag**: how late a 1 ms sleep wakes up (p90 over the window, ms).

Workers = WORKERS_PER_FREE_CORE x cores x share, between MIN_WORKERS and MAX_WORKERS, and
fewer again when the lag says the scheduler is already behind. `PICOCHARGE_TEST_WORKERS`
overrides the choice. The choice and the measurements are printed in the run's header, so
a failure on a slow host names the host it ran on.
"""

from __future__ import annotations

import os
import time

# The suite's tests mostly wait for boards, brokers and servers: with six workers on an idle
# 2-core host the CPUs were busy 70 % of the run (7 min 28 s); eight keep them busy (a load
# average near 10), which the firmware now rides out (a spoiled meter pass is fitted, a held
# pilot read goes on); beside a busy process per core the share halves, and so do they.
WORKERS_PER_FREE_CORE = 4
MIN_WORKERS = 2
MAX_WORKERS = 8
LAG_SLOW_MS = 2.0  # a p90 wake-up later than this: the scheduler is already behind


def cpu_share(window_s: float = 0.15, windows: int = 3) -> float:
    """Fraction of one core a busy loop gets over `window_s` of wall time, the best of
    `windows` windows: a moment's blip (a process finishing beside the run) left a fresh-clone
    run with 5 workers and 9 minutes of suite; a host that stays busy is busy in each."""
    best = 0.0
    for _ in range(windows):
        wall0 = time.perf_counter()
        cpu0 = time.process_time()
        while time.perf_counter() - wall0 < window_s:
            pass
        wall = time.perf_counter() - wall0
        best = max(best, (time.process_time() - cpu0) / wall)
    return min(1.0, best)


def wake_lag_ms(samples: int = 100) -> float:
    """p90 of how late a 1 ms sleep returns, in ms."""
    late = []
    for _ in range(samples):
        t0 = time.perf_counter()
        time.sleep(0.001)
        late.append((time.perf_counter() - t0) * 1000 - 1.0)
    late.sort()
    return max(0.0, late[int(0.9 * (len(late) - 1))])


def measure() -> dict:
    cores = os.cpu_count() or 1
    share = cpu_share()
    lag = wake_lag_ms()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return {"cores": cores, "cpu_share": round(share, 2), "lag_ms": round(lag, 2),
            "load": round(load, 2)}


def workers_for(pace: dict) -> int:
    """The worker count for a host measured by `measure()`."""
    n = WORKERS_PER_FREE_CORE * pace["cores"] * pace["cpu_share"]
    if pace["lag_ms"] > LAG_SLOW_MS:
        n = n * LAG_SLOW_MS / pace["lag_ms"]
    return int(max(MIN_WORKERS, min(MAX_WORKERS, round(n))))


def choose_workers() -> tuple[int, dict]:
    """(workers, measurements); PICOCHARGE_TEST_WORKERS, when set, decides instead."""
    pace = measure()
    forced = os.environ.get("PICOCHARGE_TEST_WORKERS")
    if forced:
        pace["forced"] = True
        return max(1, int(forced)), pace
    return workers_for(pace), pace
