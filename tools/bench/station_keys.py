"""What verifying a charge point's AuthorizationKey costs, with and without the cache.

    python -m tools.bench.station_keys [--stations 10000]

Hashes one key per station (argon2id, as registration does), then times: a cold login
(the KDF; what every station pays once after a server start), a warm login (the cache:
an HMAC and a dict lookup) and a wrong key (always the KDF, never cached). Prints one JSON
object; the cold figure times a sample of stations, the warm one all of them.
"""

from __future__ import annotations

import argparse
import json
import time

from server.station_keys import KeyVerifier, hash_key


def measure(stations: int, cold_sample: int) -> dict:
    keys = {f"CP-{n:05d}": f"bench-key-{n:012d}" for n in range(stations)}
    sample = list(keys)[:cold_sample]
    started = time.perf_counter()
    stored = {cp_id: hash_key(keys[cp_id]) for cp_id in sample}
    hash_ms = (time.perf_counter() - started) * 1000 / len(sample)
    # The remaining stations share one hash: the cache is keyed by station, so this
    # changes nothing for the warm path and saves minutes of hashing.
    shared = stored[sample[0]]
    verifier = KeyVerifier(max_entries=stations)

    started = time.perf_counter()
    for cp_id in sample:
        assert verifier.verify(cp_id, keys[cp_id], stored[cp_id])
    cold_ms = (time.perf_counter() - started) * 1000 / len(sample)
    for cp_id in keys:
        if cp_id not in stored:
            stored[cp_id] = shared
            verifier.remember(cp_id, keys[cp_id], shared)

    started = time.perf_counter()
    for cp_id, key in keys.items():
        assert verifier.verify(cp_id, key, stored[cp_id])
    warm_us = (time.perf_counter() - started) * 1e6 / stations

    started = time.perf_counter()
    for cp_id in sample:
        assert not verifier.verify(cp_id, "wrong-key-000000000", stored[cp_id])
    wrong_ms = (time.perf_counter() - started) * 1000 / len(sample)
    return {"stations": stations, "hash_ms": round(hash_ms, 2), "cold_verify_ms": round(cold_ms, 2),
            "warm_verify_us": round(warm_us, 2), "wrong_key_ms": round(wrong_ms, 2),
            "all_stations_cold_s": round(cold_ms * stations / 1000, 1),
            "all_stations_warm_ms": round(warm_us * stations / 1000, 1),
            "cache": verifier.stats()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stations", type=int, default=10000)
    p.add_argument("--cold-sample", type=int, default=50)
    opts = p.parse_args(argv)
    print(json.dumps(measure(opts.stations, min(opts.cold_sample, opts.stations))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
