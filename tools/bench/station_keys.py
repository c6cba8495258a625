"""What checking charge points' AuthorizationKeys costs: the current stored form against
the argon2id hashes of earlier versions.

    python -m tools.bench.station_keys [--stations 10000]

Hashes one key per station in the current form (HMAC-SHA256 under the server secret),
then times the check of every station's right key (what a restart of the whole fleet
costs), of a wrong key, and, for a sample, the argon2id check an earlier version's hash
needs once (before it is replaced). Prints one JSON object; `all_stations_*` are the CPU
time for the whole fleet on one core.
"""

from __future__ import annotations

import argparse
import json
import time

import argon2

from server.station_keys import StationKeys


def measure(stations: int, legacy_sample: int) -> dict:
    keys = StationKeys()
    plain = {f"CP-{n:05d}": f"bench-key-{n:012d}" for n in range(stations)}

    started = time.perf_counter()
    stored = {cp_id: keys.hash_key(cp_id, key) for cp_id, key in plain.items()}
    hash_us = (time.perf_counter() - started) * 1e6 / stations

    started = time.perf_counter()
    for cp_id, key in plain.items():
        assert keys.matches(cp_id, key, stored[cp_id])
    right_us = (time.perf_counter() - started) * 1e6 / stations

    started = time.perf_counter()
    for cp_id in plain:
        assert not keys.matches(cp_id, "wrong-key-000000000", stored[cp_id])
    wrong_us = (time.perf_counter() - started) * 1e6 / stations

    earlier = argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
    sample = list(plain)[:legacy_sample]
    legacy = {cp_id: earlier.hash(plain[cp_id]) for cp_id in sample}
    started = time.perf_counter()
    for cp_id in sample:
        assert keys.verify(cp_id, plain[cp_id], legacy[cp_id])
    legacy_ms = (time.perf_counter() - started) * 1000 / len(sample)
    return {"stations": stations, "hash_us": round(hash_us, 2),
            "right_key_us": round(right_us, 2), "wrong_key_us": round(wrong_us, 2),
            "all_stations_ms": round(right_us * stations / 1000, 1),
            "earlier_argon2id_ms": round(legacy_ms, 2),
            "all_stations_argon2id_s": round(legacy_ms * stations / 1000, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stations", type=int, default=10000)
    p.add_argument("--legacy-sample", type=int, default=30)
    opts = p.parse_args(argv)
    print(json.dumps(measure(opts.stations, min(opts.legacy_sample, opts.stations))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
