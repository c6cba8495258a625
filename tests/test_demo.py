"""`make demo` on a fresh copy of the repository: a car charges within minutes, the REST API
shows it (rising energy, stored telemetry), Ctrl-C stops everything it started, and a
second run reuses what the first set up."""

from __future__ import annotations

import json
import os
import signal
import time

from tests.fresh_copy import Terminal, api, energy_readings, fresh_copy, stop_leftovers


def Demo(clone, args=""):
    return Terminal(clone, ["make", "--no-print-directory", "demo"]
                    + ([f"ARGS={args}"] if args else []))


def test_make_demo_charges_a_car_seen_through_the_rest_api_and_ctrl_c_stops_everything(
        tmp_path):
    clone = fresh_copy(tmp_path / "picocharge")
    demo = Demo(clone)
    try:
        base = demo.wait_for(r"Dashboard:\s+(http://127\.0\.0\.1:\d+)/", 300).group(1)
        password = demo.wait_for(r"login: demo\s+password: (\S+)", 5).group(1)
        transactions = api(base, "/chargepoints/DEMO-1/transactions")
        running = [tx for tx in transactions if not tx.get("stop")]
        assert len(running) == 1 and running[0]["id_tag"] == "DEMO-CARD", transactions
        tx_id = running[0]["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            energy = energy_readings(base, tx_id)
            if len(energy) >= 3 and energy[-1] > energy[0]:
                break
            time.sleep(1)
        assert len(energy) >= 3 and energy == sorted(energy) and energy[-1] > energy[0], energy
        assert api(base, "/chargepoints/DEMO-1/telemetry"), "no telemetry stored"
        # make itself dies of the SIGINT (-2) after its child, the demo, has cleaned up
        assert demo.ctrl_c() in (0, -signal.SIGINT), demo.text
    finally:
        if demo.proc.poll() is None:
            os.killpg(demo.proc.pid, signal.SIGKILL)
        leftovers = stop_leftovers(clone)
    assert "stopped the board, the server and its broker" in demo.text
    assert leftovers == []  # no board, server or Mosquitto left behind
    state = json.loads((clone / "var" / "demo" / "demo.json").read_text())
    assert (clone / "var" / "demo" / "demo.json").stat().st_mode & 0o777 == 0o600
    assert state["password"] == password

    # the second run: the same login, token and station key
    again = Demo(clone, "--for 5")
    try:
        base = again.wait_for(r"Dashboard:\s+(http://127\.0\.0\.1:\d+)/", 300).group(1)
        assert again.wait_for(r"password: (\S+)", 5).group(1) == password
        assert again.proc.wait(120) == 0, again.text
    finally:
        if again.proc.poll() is None:
            os.killpg(again.proc.pid, signal.SIGKILL)
        leftovers = stop_leftovers(clone)
    assert json.loads((clone / "var" / "demo" / "demo.json").read_text()) == state
    assert leftovers == []
