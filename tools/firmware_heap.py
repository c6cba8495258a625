"""Heap benchmark: the charge point's peak heap during a full charging session on the
MicroPython Unix port (32-bit) at a Pico W's heap (station test double, a local central system built on
the `ocpp` package).

    .venv/bin/python -m tools.firmware_heap

Prints and returns {"heap_kib": 187.4, "peak_used_kib": ..., "transactions": 1}. The peak
is the heap minus the lowest free heap seen after a gc.collect() (sampled every 0.5 s), so
it counts live data including the firmware's own bytecode.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests" / "firmware_ocpp"


def run() -> dict:
    for p in (str(ROOT), str(TESTS)):
        if p not in sys.path:
            sys.path.insert(0, p)
    from cprunner import ChargePointProcess
    from csms import CentralSystem

    cs = CentralSystem(heartbeat_s=2).start()
    cp_id = "PICO-HEAP"
    config = {"cp_id": cp_id, "ocpp": {"url": cs.url, "reconnect_min_s": 0.2,
                                       "keys": {"MeterValueSampleInterval": 1}}}
    with tempfile.TemporaryDirectory() as tmp:
        cp = ChargePointProcess("micropython", Path(tmp) / "cp", config)
        try:
            cs.wait(lambda: cs.last_status(cp_id) == "Available", 30, "Available")
            cp.ev(pilot="B")
            cp.ev(start=True, tag="CARD1")
            cs.wait(lambda: cs.transactions, 30, "StartTransaction")
            cp.ev(pilot="C")
            txid = max(cs.transactions)
            cs.wait(lambda: len(cs.transactions[txid]["values"]) >= 10, 60, "meter values")
            cp.ev(pilot="A")
            cs.wait(lambda: cs.transactions[txid]["meter_stop"] is not None, 30, "StopTransaction")
        finally:
            out = cp.finish()
            cs.stop()
    from tools.board import PICO_W_HEAP_BYTES

    low = int(re.search(r"^HEAP (\d+)$", out, re.M).group(1))
    result = {"heap_kib": round(PICO_W_HEAP_BYTES / 1024, 1),
              "peak_used_kib": round((PICO_W_HEAP_BYTES - low) / 1024, 1),
              "transactions": len(cs.transactions)}
    print("firmware heap (MicroPython Unix port, 32-bit, %.1f KiB): peak %.1f KiB used during a "
          "charging session" % (result["heap_kib"], result["peak_used_kib"]))
    return result


if __name__ == "__main__":
    run()
