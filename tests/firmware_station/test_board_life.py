"""Board life on both runtimes: safe mode by jumper and by the REPL flag, and the clean
reboot path."""

import pytest
from stationkit import boot


@pytest.mark.dual_runtime
def test_safe_mode_jumper_keeps_the_app_from_starting(board_factory):
    board = board_factory({"cp_id": "PICO-0003"}, start=False)
    board.control("jumper", pin=22, level=0)
    board.start()
    board.wait_for(r"^safe mode \(jumper on GP22\): application not started; REPL free\.")
    assert "booting" not in board.console.text


@pytest.mark.dual_runtime
def test_ev_safe_mode_reboots_cleanly_into_safe_mode_and_back(board_factory):
    board = boot(board_factory, {"intervals": {"sensors_s": 2}})
    board.control("plug", demand_a=16)
    board.wait_for(r"^status: Charging$")
    mark = board.console.mark()
    board.control("console", line="ev.safe_mode()")
    board.wait_for(r"^reboot: safe mode$", start=mark)
    board.wait_for(r"^safe mode \(flag file /safe_mode\)", start=mark, timeout=30)
    assert board.board.resets == ["hard"]  # machine.reset() after the clean shutdown
    # leaving it: on a board `ev.safe_mode(False)` at the free REPL (or `mpremote fs rm
    # :safe_mode`) removes the flag; the host board has no REPL after main.py, so the flag
    # is removed from its flash directory, then a reset starts the app again
    (board.flash / "safe_mode").unlink()
    mark = board.console.mark()
    board.control("reset")
    board.wait_for(r"^ready: ", start=mark, timeout=30)
