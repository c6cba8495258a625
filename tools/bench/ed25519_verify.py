"""Ed25519 verification on the board: time and heap on the MicroPython Unix port, and an
estimate of the RP2040's time.

    python -m tools.bench.ed25519_verify

Measures, on `.cache/bin/micropython` (the test build: 32-bit, mbedTLS), with the modules
compiled to .mpy as a board loads them:

- the time of one signature check as a board makes it (`ed25519.verifier` over the
  manifest message, SHA-512 from `sha512.py`), fastest of several runs (the machine is
  shared: the minimum is the least disturbed run);
- heap: the import cost of `firmware_trust`, `ed25519` and `sha512` (second import, as a
  board that checked a bundle before), the data a verification holds at its yields, and
  the peak: the smallest `-X heapsize` at which a verification succeeds, minus the
  smallest at which the same script without it runs (bisection, 256-byte steps);
- reference workloads whose RP2040 times are published (the "Pi Calculation 1000 bits",
  "Pi Calculation 5000 bits" and "Integer multiplication 1000000 times" rows of
  shaoziyang/micropython_benchmarks on GitHub, README table, column RP2040 MicroPython
  v1.23.0 at 125 MHz: 868 ms, 23 338 ms and 28 283 ms): the same arithmetic, timed here.
  The RP2040's verify time is estimated as the Unix port's verify time x (published
  RP2040 time / Unix port time) for each workload: the big-integer ones (pi) are the
  closer match, the interpreter-bound one (integer multiplication, which allocates a big
  int per product on a 32-bit port as on the RP2040) gives the other end.

Prints a summary and returns a dict (`make bench` stores it with the firmware figures).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tools.board import FIRMWARE, MICROPYTHON, compiled

# shaoziyang/micropython_benchmarks, README.md (RP2040, MicroPython v1.23.0, 125 MHz)
RP2040_PUBLISHED_MS = {"pi_1000": 868, "pi_5000": 23338, "int_mul_1e6": 28283}
RUNS = 15
MODULES = ("ed25519", "sha512", "firmware_trust")

PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"

COMMON = r"""
import gc, sys, time, binascii
sys.path[:] = ['']
u = binascii.unhexlify
PUB = u(%(pub)r)
MSG = u(%(msg)r)
SIG = u(%(sig)r)
"""

TIMING = COMMON + r"""
def check():
    import ed25519
    for v in ed25519.verifier(PUB, MSG, SIG, 4):
        pass
    del sys.modules['ed25519']
    return v

best = None
for _ in range(%(runs)d):
    gc.collect()
    t = time.ticks_us()
    ok = check()
    dt = time.ticks_diff(time.ticks_us(), t)
    assert ok is True
    best = dt if best is None else min(best, dt)
print('VERIFY_US', best)
import ed25519
best = None
for _ in range(%(runs)d):
    gc.collect()
    t = time.ticks_us()
    for v in ed25519.verifier(PUB, MSG, SIG, 4):
        pass
    dt = time.ticks_diff(time.ticks_us(), t)
    best = dt if best is None else min(best, dt)
print('LOADED_US', best)
del sys.modules['ed25519']

for name in %(modules)r:
    __import__(name)
    del sys.modules[name]
    gc.collect()
    b = gc.mem_alloc()
    __import__(name)
    gc.collect()
    print('IMPORT', name, gc.mem_alloc() - b)
    del sys.modules[name]

import ed25519
gc.collect()
base = gc.mem_alloc()
top = 0
for v in ed25519.verifier(PUB, MSG, SIG, 1):
    gc.collect()
    top = max(top, gc.mem_alloc() - base)
print('LIVE', top)

def pi_digits(n):
    extra = 8
    one = 10 ** (n + extra)
    t = c = 3 * one
    k, dk, d, dd = 1, 0, 0, 24
    while t > 1:
        k, dk, d, dd = k + dk, dk + 8, d + dd, dd + 32
        t = t * k // d
        c += t
    return c // 10 ** extra

def int_mul(n, a, b):
    for _ in range(n):
        c = a * b

for name, fn in (('pi_1000', lambda: pi_digits(1000)), ('pi_5000', lambda: pi_digits(5000)),
                 ('int_mul_1e6', lambda: int_mul(1000000, 12345678, 56781234))):
    best = None
    for _ in range(%(ref_runs)d):
        gc.collect()
        t = time.ticks_us()
        fn()
        dt = time.ticks_diff(time.ticks_us(), t)
        best = dt if best is None else min(best, dt)
    print('REF', name, best)
"""

PEAK = COMMON + r"""
gc.collect()
if %(verify)r:
    import ed25519
    for v in ed25519.verifier(PUB, MSG, SIG, 4):
        pass
    assert v is True
print('DONE')
"""


def manifest_signature() -> tuple[str, str]:
    """The message a board verifies for a manifest (context + SHA-256), and its signature."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from server.files import MANIFEST_CONTEXT

    msg = MANIFEST_CONTEXT + hashlib.sha256(b'{"version": "2.0.0", "files": {}}').digest()
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(SECRET))
    return msg.hex(), key.sign(msg).hex()


def run_script(work: Path, script: str, heap: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(MICROPYTHON), "-X", f"heapsize={heap}", "-c", script], cwd=work,
                          capture_output=True, text=True, timeout=timeout)


def smallest_heap(work: Path, script: str) -> int:
    """The smallest -X heapsize (bytes, 256-byte steps) at which `script` prints DONE."""
    lo, hi = 2048, 64 * 1024
    if "DONE" not in run_script(work, script, str(hi)).stdout:
        raise RuntimeError("the script fails even at %d bytes of heap" % hi)
    while hi - lo > 256:
        mid = (lo + hi) // 2 // 256 * 256
        if "DONE" in run_script(work, script, str(mid)).stdout:
            hi = mid
        else:
            lo = mid
    return hi


def run(runs: int = RUNS, ref_runs: int = 3) -> dict:
    if not MICROPYTHON.exists():
        raise RuntimeError(f"{MICROPYTHON} is missing: run `make micropython`")
    msg, sig = manifest_signature()
    values = {"pub": PUBLIC, "msg": msg, "sig": sig, "runs": runs, "ref_runs": ref_runs,
              "modules": MODULES}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in MODULES:
            shutil.copyfile(compiled(FIRMWARE / "lib" / (name + ".py")), work / (name + ".mpy"))
        out = run_script(work, TIMING % values, "192K")
        if out.returncode != 0:
            raise RuntimeError(out.stdout + out.stderr)
        text = out.stdout
        with_verify = smallest_heap(work, PEAK % dict(values, verify=True))
        without = smallest_heap(work, PEAK % dict(values, verify=False))
    verify_ms = int(re.search(r"^VERIFY_US (\d+)", text, re.M).group(1)) / 1000
    loaded_ms = int(re.search(r"^LOADED_US (\d+)", text, re.M).group(1)) / 1000
    imports = {m: int(n) for m, n in re.findall(r"^IMPORT (\w+) (\d+)", text, re.M)}
    refs = {m: int(n) / 1000 for m, n in re.findall(r"^REF (\w+) (\d+)", text, re.M)}
    ratios = {m: RP2040_PUBLISHED_MS[m] / refs[m] for m in refs}
    estimate = {m: round(verify_ms * r / 1000, 2) for m, r in ratios.items()}
    stamp = MICROPYTHON.with_name("micropython.stamp")
    result = {
        "micropython": stamp.read_text().strip() if stamp.exists() else str(MICROPYTHON),
        "verify_ms_unix": round(verify_ms, 2),
        "verify_ms_unix_module_loaded": round(loaded_ms, 2),
        "import_bytes": imports,
        "live_at_yields_bytes": int(re.search(r"^LIVE (\d+)", text, re.M).group(1)),
        "peak_heap_bytes": with_verify - without,
        "reference_ms_unix": {m: round(v, 1) for m, v in refs.items()},
        "reference_ms_rp2040_published": RP2040_PUBLISHED_MS,
        "rp2040_over_unix": {m: round(r, 1) for m, r in ratios.items()},
        "rp2040_verify_s_estimate": estimate,
    }
    print("ed25519 verify on the MicroPython Unix port: %.1f ms with the module loads, %.1f ms "
          "without (fastest of %d); peak heap %d B (modules included; smallest heap with minus "
          "without a verification); import cost %s; held at the yields %d B" % (
              verify_ms, loaded_ms, runs, result["peak_heap_bytes"],
                                       ", ".join("%s %d B" % kv for kv in imports.items()),
                                       result["live_at_yields_bytes"]))
    print("reference workloads on the Unix port: %s; RP2040 published: %s" % (
        ", ".join("%s %.1f ms" % kv for kv in refs.items()),
        ", ".join("%s %d ms" % kv for kv in RP2040_PUBLISHED_MS.items())))
    print("RP2040 estimate for one verify: %s" % ", ".join(
        "%.2f s by %s (x%.0f)" % (estimate[m], m, ratios[m]) for m in refs))
    return result


if __name__ == "__main__":
    run()
