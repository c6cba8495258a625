"""The outage soak, 3 minutes of it (`make soak` runs the same for 2 hours): a board on the
MicroPython runtime charges cars against `python -m server` and Mosquitto while Wi-Fi
drops, the broker and the central system restart and the network black-holes or resets
its connections. See tests/outage_soak.py for what is injected and measured."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.outage_soak import Soak, summary_text
from tools.board import MICROPYTHON

MINUTES = float(os.environ.get("PICOCHARGE_SOAK_MINUTES", "3"))
SEED = int(os.environ.get("PICOCHARGE_SOAK_SEED", "20261130"))
FIRMWARE = os.environ.get("PICOCHARGE_SOAK_FIRMWARE")  # another firmware tree (default firmware/)


@pytest.mark.slow(seconds=MINUTES * 60 + 25)
@pytest.mark.timeout(int(MINUTES * 60) + 420)
def test_board_recovers_every_link_after_random_outages_without_reboot_or_lost_transaction(
        tmp_path):
    if not MICROPYTHON.exists():
        pytest.fail(f"{MICROPYTHON} is missing: `make test` builds it (make micropython)")
    result = Soak(MINUTES, tmp_path / "soak", seed=SEED, echo=print,
                  firmware=Path(FIRMWARE) if FIRMWARE else None).run()
    print(summary_text(result))
    faults = result["faults_by_category"]
    for category in ("wifi", "broker", "server", "blackhole"):
        assert faults[category] >= 1, f"no {category} fault injected: {faults}"
    assert result["boots"] == 1 and not result["board_resets"], (
        f"the board rebooted: {result['board_resets']}")
    assert result["all_recovered"], [f for f in result["faults"]
                                     if None in f["recovery_s"].values()]
    assert None not in result["final_links"].values(), result["final_links"]
    tx = result["transactions"]
    assert tx["board_started"] >= 1, result["sessions"]
    assert tx["lost"] == 0, tx["lost_detail"]
    assert tx["matched_and_agreeing"] == tx["board_started"], tx
    assert tx["unexplained_server_rows"] == [], tx
    assert result["energy"]["within_tolerance"] == result["energy"]["checked"], result["energy"]
    assert result["verdict"]["checks"]["heap_flat"], result["heap"]["windows"]
