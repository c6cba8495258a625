"""Reset (OCPP 1.6 §5.14) and a full flash (journal.py's full-flash rule) against the
independent central system.

- Reset Hard / Soft while a transaction runs: the transaction is stopped with reason
  HardReset / SoftReset, its StopTransaction reaches the central system, then the board's
  reset handler runs (the runner prints `RESET <kind>`).
- The flash fills up (tests/firmware_ocpp/fullflash.py: every write fails with ENOSPC while
  the test says so): see the test's docstring for the rule.
"""

import json
import re

import pytest
from cprunner import wait_until
from ocpp.v16 import call
from ocpp_scenarios import start, summary, wait_console

CP = "PICO-RESET"


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


def status_of(cs, connector):
    notes = [m for m in cs.of("StatusNotification", CP) if m["connector_id"] == connector]
    return notes[-1] if notes else None


def faulted_full(note):
    return note is not None and (note["status"], note["error_code"], note.get("info")) == (
        "Faulted", "OtherError", "flash full: journal")


@pytest.mark.dual_runtime
def test_a_full_flash_refuses_new_transactions_keeps_the_accepted_ones_and_recovers(cs, runtime_name, tmp_path,
                                                                                 record_heap):
    """The rule (firmware/lib/journal.py): a StartTransaction the journal cannot persist is
    refused (no transaction, no energy); from then on no new transaction starts and the
    charge point reports Faulted / OtherError "flash full: journal" on connector 0, and on
    connector 1 while no transaction runs; a running transaction goes on and its
    StopTransaction, kept in RAM, is delivered with the right transactionId; MeterValues
    that cannot be written are dropped (counted); once the flash takes records again the
    charge point is Available and starts transactions again."""
    cp = start(cs, runtime_name, tmp_path / "cp", CP, flash_module="fullflash", MeterValueSampleInterval=1)
    full = cp.dir / "flash_full"
    try:
        # idle, the flash fills up: the next StartTransaction cannot be persisted
        full.touch()
        cp.ev(pilot="B", start=True, tag="CARD0")
        wait_console(cp, "transaction for CARD0 refused: flash full", 30)
        cs.wait(lambda: faulted_full(status_of(cs, 0)) and faulted_full(status_of(cs, 1)), 30, "Faulted (flash full)")
        assert cs.call(CP, call.RemoteStartTransaction(id_tag="REMOTE")).status == "Rejected"
        cp.ev(start=True, tag="CARD0")
        wait_console(cp, "local_start unavailable", 30)
        assert not cs.transactions
        full.unlink()  # room again: the charge point recovers by itself
        cs.wait(lambda: status_of(cs, 0)["status"] == "Available" and status_of(cs, 1)["status"] == "Preparing",
                30, "Available / Preparing after the flash took records again")

        # a transaction runs, the central system is away, the flash fills up
        cp.ev(pilot="C", start=True, tag="CARD1")
        cs.wait(lambda: cs.transactions, 30, "StartTransaction")
        txid = max(cs.transactions)
        cs.wait(lambda: cs.last_status(CP) == "Charging", 30, "Charging")
        cs.go_offline()
        wait_console(cp, "ocpp: disconnected", 30)
        n = cp.console().count("journal: flash full: MeterValues")
        full.touch()
        wait_until(lambda: cp.console().count("journal: flash full: MeterValues") > n, 30,
                   "a MeterValues the flash did not take")
        cp.ev(pilot="A")
        wait_console(cp, "journal: flash full: StopTransaction", 30)
        cp.ev(pilot="B", start=True, tag="CARD2")
        wait_console(cp, "transaction for CARD2 refused: flash full", 30)
        cs.go_online()
        cs.wait(lambda: cs.transactions[txid]["meter_stop"] is not None, 40, "the StopTransaction from RAM")
        cs.wait(lambda: faulted_full(status_of(cs, 0)) and faulted_full(status_of(cs, 1)), 30, "Faulted (flash full)")
        assert cs.call(CP, call.RemoteStartTransaction(id_tag="REMOTE")).status == "Rejected"
        during = summary(cs, CP)
        full.unlink()
        cs.wait(lambda: status_of(cs, 0)["status"] == "Available" and status_of(cs, 1)["status"] == "Preparing",
                30, "Available / Preparing again")
        cp.ev(start=True, tag="CARD3")
        cs.wait(lambda: len(cs.transactions) == 2, 30, "a new transaction after the recovery")
        cp.ev(pilot="A")
        cs.wait(lambda: cs.transactions[max(cs.transactions)]["meter_stop"] is not None, 30, "its StopTransaction")
    finally:
        out = cp.finish()
    tx = cs.transactions[txid]
    assert (tx["id_tag"], tx["reason"]) == ("CARD1", "EVDisconnected")
    assert [t["id_tag"] for t in cs.transactions.values()] == ["CARD1", "CARD3"]
    assert during["journal_degraded"] and during["journal_dropped"] >= 1, during
    assert during["transaction"] is None and during["status"] == "Faulted", during
    end = json.loads(out.split("SUMMARY ", 1)[1].splitlines()[0])
    assert end["journal_degraded"] is None and end["queued"] == 0, end
    assert [m["id_tag"] for m in cs.of("Authorize", CP)] == ["CARD0", "CARD1", "CARD3"]
    assert not cs.unknown_tx and cs.invalid == [], (cs.unknown_tx, cs.invalid)
    if runtime_name == "micropython":
        record_heap(int(re.search(r"^HEAP (\d+)$", out, re.M).group(1)))
