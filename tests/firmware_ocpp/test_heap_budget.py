"""Heap budget of the always-loaded OCPP path: import its modules from .mpy (as a board
gets them) on the MicroPython Unix port at a Pico W's heap, in dependency order, and measure each
module's own import cost (live heap after a gc.collect(), before and after). The total
must stay under BUDGET; the per-module table is printed (`pytest -s` shows it).

Feature modules (ocpp_core, ocpp_localauth, ...) and the WebSocket handshake
(ocpp_wsopen) are loaded on demand and dropped again; they are not counted here."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tools.board import DEFAULT_HEAP, MICROPYTHON, check_micropython, install_firmware

# measured at the last change (32-bit Unix port, object sizes as on the RP2040): 32 016 bytes
# (40 992 on the former 64-bit build); plus about 10 % headroom
BUDGET = 35_500
ALWAYS_LOADED = ("ocpp_rpc", "ocpp_ws", "ocpp_config", "journal", "ocpp_link", "ocpp_tx",
                 "chargepoint")
# imported first, not counted: the shared modules and what the board loads anyway
PRELOAD = ("simworld", "machine", "asyncio", "json", "socket", "binascii", "hashlib", "random",
           "struct", "time", "storage", "config", "clock", "connector_state")

SCRIPT = r"""
import gc, sys
sys.path[:] = ['', '.frozen', 'lib']
for m in %(pre)r:
    __import__(m)
import asyncio
asyncio.Lock(); asyncio.Event()  # asyncio's lazily loaded parts: not ours
for m in %(mods)r:
    gc.collect()
    b = gc.mem_alloc()
    __import__(m)
    gc.collect()
    print('COST', m, gc.mem_alloc() - b)
"""


def test_always_loaded_ocpp_path_fits_its_heap_budget(tmp_path: Path):
    # a missing or stale MicroPython build is a broken setup: it fails here, saying how to
    # build it, instead of skipping the one check of the board's heap budget
    check_micropython()
    install_firmware(tmp_path)
    out = subprocess.run(
        [str(MICROPYTHON), "-X", f"heapsize={DEFAULT_HEAP}", "-c",
         SCRIPT % {"pre": PRELOAD, "mods": ALWAYS_LOADED}],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    costs = {}
    for line in out.stdout.splitlines():
        if line.startswith("COST "):
            _, name, n = line.split()
            costs[name] = int(n)
    assert list(costs) == list(ALWAYS_LOADED), out.stdout + out.stderr
    total = sum(costs.values())
    print("\nimport cost of the always-loaded OCPP path (.mpy, 32-bit Unix port, a Pico W's heap):")
    for name, n in costs.items():
        print("  %-12s %6d" % (name, n))
    print("  %-12s %6d (budget %d)" % ("total", total, BUDGET))
    assert total <= BUDGET, "always-loaded OCPP path costs %d bytes, budget %d" % (total, BUDGET)
