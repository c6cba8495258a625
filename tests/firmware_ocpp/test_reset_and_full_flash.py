"""Reset (OCPP 1.6 §5.14) and a full flash (journal.py's full-flash rule) against the
independent central system.

- Reset Hard / Soft while a transaction runs: the transaction is stopped with reason
  HardReset / SoftReset, its StopTransaction reaches the central system, then the board's
  reset handler runs (the runner prints `RESET <kind>`).
- The flash fills up (tests/firmware_ocpp/fullflash.py: every write fails with ENOSPC while
  the test says so): see the test's docstring for the rule.
"""

import pytest
from csms import CentralSystem
from ocpp.v16 import call
from ocpp_scenarios import KEY, start, wait_console

CP = "PICO-RESET"


@pytest.fixture
def cs():
    server = CentralSystem(password=KEY, heartbeat_s=30).start()
    yield server
    server.stop()


def charge(cs, cp, tag):
    """Plug in, present `tag`, charge; the central system's transactionId."""
    n = len(cs.transactions)
    cp.ev(pilot="B", start=True, tag=tag)
    cs.wait(lambda: len(cs.transactions) > n, 30, "StartTransaction for " + tag)
    cp.ev(pilot="C")
    cs.wait(lambda: cs.last_status(CP) == "Charging", 30, "Charging")
    return max(cs.transactions)


@pytest.mark.dual_runtime
def test_reset_hard_and_soft_stop_the_running_transaction_first(cs, runtime_name, tmp_path):
    cp = start(cs, runtime_name, tmp_path / "cp", CP)
    try:
        hard = charge(cs, cp, "CARD1")
        assert cs.call(CP, call.Reset(type="Hard")).status == "Accepted"
        cs.wait(lambda: cs.transactions[hard]["meter_stop"] is not None, 30, "StopTransaction (Hard)")
        wait_console(cp, "RESET Hard", 30)

        # the board is still there (the runner's reset handler only prints): unplug, next one
        cp.ev(pilot="A")
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available")
        soft = charge(cs, cp, "CARD2")
        assert cs.call(CP, call.Reset(type="Soft")).status == "Accepted"
        cs.wait(lambda: cs.transactions[soft]["meter_stop"] is not None, 30, "StopTransaction (Soft)")
        wait_console(cp, "RESET Soft", 30)
    finally:
        out = cp.finish()
    assert (cs.transactions[hard]["reason"], cs.transactions[soft]["reason"]) == ("HardReset", "SoftReset")
    # the transaction was stopped before the reset handler ran
    for kind, reason in (("Hard", "HardReset"), ("Soft", "SoftReset")):
        lines = out.splitlines()
        stopped = next(i for i, line in enumerate(lines) if "stopped (%s)" % reason in line)
        reset = lines.index("RESET " + kind)
        assert stopped < reset
        assert "ocpp: rebooting (%s)" % kind in lines[stopped:reset + 1]
    assert cs.invalid == [] and not cs.unknown_tx, (cs.invalid, cs.unknown_tx)
