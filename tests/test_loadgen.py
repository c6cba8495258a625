"""tools/loadgen.py, the lean fleet generator, on a small fleet: every station admitted on
OCPP and MQTT with its own key, the measurements taken during the hold, telemetry acked
by the broker all stored (its loss figure is what the benchmark relies on)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_generator_admits_a_small_fleet_measures_it_and_loses_nothing():
    done = subprocess.run([sys.executable, "-m", "tools.loadgen", "--stations", "20",
                           "--interval", "1", "--hold", "4", "--ramp", "0", "--start-server"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["admission"]["ocpp_admitted"] == 20 and report["admission"]["mqtt_admitted"] == 20
    assert report["ocpp_call_to_result"]["n"] > 0 and report["mqtt_publish_to_puback"]["n"] > 0
    assert report["telemetry_acked_in_all"] > 0
    assert report["telemetry_stored_in_all"] == report["telemetry_acked_in_all"]
    assert report["telemetry_lost"] == 0
    assert set(report["errors"]) <= {"mqtt connack 5"}  # refused until its credential lands
