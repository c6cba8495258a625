"""Transaction-related messages the central system fails to process (OCPP 1.6 §3.7.1:
TransactionMessageAttempts, TransactionMessageRetryInterval × the number of preceding
transmissions) and a central system slow to answer StartTransaction, against the
independent central system (`cs.fail_next[action] = n` answers the next n with a
CALLERROR, `cs.delay[action] = s` answers after s seconds).

- StartTransaction failing twice is delivered at the third attempt; a MeterValues failing
  three times is dropped after the third (and the charge point says so in its log and its
  summary); a StopTransaction failing once is delivered at the second. Every retry keeps
  the message id and waits interval × attempts made.
- A Start- or StopTransaction left unanswered (no answer is not a failure to process) is
  sent again with the same message id until answered, however often.
- MeterValues and the StopTransaction queued before the StartTransaction was answered go
  out with the central system's transactionId.
"""

import json
import re
import time

import pytest
from cprunner import ChargePointProcess
from ocpp_scenarios import config, start, wait_console

CP = "PICO-RETRY"
INTERVAL = 2  # TransactionMessageRetryInterval (s)


def attempts(cs, action):
    """[(message id, [times of each attempt])] of the CALLs of `action`, in order."""
    out = {}
    with cs.lock:
        for a, uid, t in cs.attempts:
            if a == action:
                out.setdefault(uid, []).append(t)
    return list(out.items())


def check_spacing(times):
    for n, (a, b) in enumerate(zip(times, times[1:]), 1):
        assert b - a >= INTERVAL * n - 0.5, ("retried too early", n, times)


@pytest.mark.dual_runtime
def test_failed_transaction_messages_are_retried_then_dropped(cs, runtime_name, tmp_path):
    cp = start(cs, runtime_name, tmp_path / "cp", CP, TransactionMessageAttempts=3,
               TransactionMessageRetryInterval=INTERVAL, MeterValueSampleInterval=2)
    try:
        cs.fail_next["StartTransaction"] = 2
        cp.ev(pilot="B", start=True, tag="CARD1")
        cs.wait(lambda: cs.transactions, 40, "StartTransaction at the third attempt")
        txid = max(cs.transactions)
        cs.fail_next["MeterValues"] = 3
        cp.ev(pilot="C")
        wait_console(cp, "dropped after 3 attempts", 60)
        cs.wait(lambda: cs.transactions[txid]["values"], 30, "a later MeterValues delivered")
        cs.fail_next["StopTransaction"] = 1
        cp.ev(pilot="A")
        cs.wait(lambda: cs.transactions[txid]["meter_stop"] is not None, 40, "StopTransaction at the second attempt")
    finally:
        out = cp.finish()
    (start_uid, start_times), = attempts(cs, "StartTransaction")
    assert len(start_times) == 3
    check_spacing(start_times)
    meter = attempts(cs, "MeterValues")
    (dropped_uid, dropped_times), = [m for m in meter if len(m[1]) > 1]
    assert len(dropped_times) == 3 and dropped_uid not in cs.answers
    check_spacing(dropped_times)
    assert all(len(times) == 1 and uid in cs.answers for uid, times in meter if uid != dropped_uid)
    (stop_uid, stop_times), = attempts(cs, "StopTransaction")
    assert len(stop_times) == 2
    check_spacing(stop_times)
    assert cs.transactions[txid]["reason"] == "EVDisconnected"
    assert [a for a, _ in cs.failed] == ["StartTransaction"] * 2 + ["MeterValues"] * 3 + ["StopTransaction"]
    assert re.search(r"^ocpp: MeterValues #\d+ dropped after 3 attempts \(InternalError\)$", out, re.M), out
    summary = json.loads(out.split("SUMMARY ", 1)[1].splitlines()[0])
    assert summary["journal_dropped"] == 1 and summary["queued"] == 0, summary
    assert not cs.unknown_tx and cs.invalid == [], (cs.unknown_tx, cs.invalid)


@pytest.mark.dual_runtime
def test_messages_queued_before_start_is_answered_get_the_real_transaction_id(cs, runtime_name, tmp_path):
    cp = start(cs, runtime_name, tmp_path / "cp", CP, MeterValueSampleInterval=1)
    try:
        cs.delay["StartTransaction"] = 10
        cp.ev(pilot="C", start=True, tag="CARD1")
        cs.wait(lambda: attempts(cs, "StartTransaction"), 30, "StartTransaction sent")
        wait_console(cp, "transaction #")
        time.sleep(3.5)  # charging: sampled MeterValues (1 s) are journaled meanwhile
        cp.ev(pilot="A")
        wait_console(cp, "stopped (EVDisconnected)")
        assert not cs.transactions, "the StartTransaction was answered too early for this test"
        cs.wait(lambda: cs.of("StopTransaction", CP), 40, "StopTransaction")
    finally:
        cp.finish()
    (txid, tx), = cs.transactions.items()
    (stop,) = cs.of("StopTransaction", CP)
    assert stop["transaction_id"] == txid and tx["reason"] == "EVDisconnected"
    meter = cs.of("MeterValues", CP)
    assert meter and all(m["transaction_id"] == txid for m in meter), meter
    assert tx["values"], tx
    assert not cs.unknown_tx and cs.invalid == [], (cs.unknown_tx, cs.invalid)


@pytest.mark.dual_runtime
def test_a_dropped_start_transaction_takes_its_transaction_messages_with_it(cs, runtime_name, tmp_path):
    cp = start(cs, runtime_name, tmp_path / "cp", CP, TransactionMessageAttempts=2,
               TransactionMessageRetryInterval=1, MeterValueSampleInterval=1)
    try:
        cs.fail_next["StartTransaction"] = 2
        cp.ev(pilot="C", start=True, tag="CARD1")
        wait_console(cp, "StartTransaction #1 dropped after 2 attempts (InternalError)", 40)
        wait_console(cp, "MeterValues #", 30)  # the next sampled value has no transactionId to carry
        cp.ev(pilot="A")
        wait_console(cp, "StopTransaction #", 30)
        # the charge point goes on: the next transaction is delivered as usual
        cp.ev(pilot="C", start=True, tag="CARD2")
        cs.wait(lambda: cs.transactions, 30, "the next StartTransaction")
        cp.ev(pilot="A")
        cs.wait(lambda: cs.of("StopTransaction", CP), 30, "its StopTransaction")
    finally:
        out = cp.finish()
    assert re.search(r"^ocpp: StopTransaction #\d+ dropped: its StartTransaction never got a transactionId$", out, re.M)
    (txid, tx), = cs.transactions.items()
    assert tx["id_tag"] == "CARD2" and tx["reason"] == "EVDisconnected"
    assert [m["transaction_id"] for m in cs.of("MeterValues", CP)] == [txid] * len(cs.of("MeterValues", CP))
    summary = json.loads(out.split("SUMMARY ", 1)[1].splitlines()[0])
    assert summary["journal_dropped"] == out.count(" dropped after ") + out.count(" dropped: its StartTransaction")
    assert not cs.unknown_tx and cs.invalid == [], (cs.unknown_tx, cs.invalid)


@pytest.mark.dual_runtime
def test_unanswered_transaction_messages_are_sent_again_never_dropped(cs, runtime_name, tmp_path):
    """No answer is not a failure to process (OCPP 1.6 §3.7.1 counts CALLERRORs): a Start-
    and a StopTransaction left unanswered more often than TransactionMessageAttempts (a
    long black hole) are sent again, with the same message id, until answered; a link that
    stayed silent since the CALL went out is dropped and made again."""
    cfg = config(cs.url, CP, TransactionMessageAttempts=2, TransactionMessageRetryInterval=1)
    cfg["ocpp"]["call_timeout_s"] = 2
    cp = ChargePointProcess(runtime_name, tmp_path / "cp", cfg)
    try:
        cs.wait(lambda: cs.last_status(CP) is not None, 40, "registered")
        cs.silent_next["StartTransaction"] = 3
        cp.ev(pilot="C", start=True, tag="CARD1")
        cs.wait(lambda: cs.transactions, 60, "StartTransaction answered at the fourth transmission")
        txid = max(cs.transactions)
        cs.silent_next["StopTransaction"] = 3
        cp.ev(pilot="A")
        cs.wait(lambda: cs.transactions[txid]["meter_stop"] is not None, 60,
                "StopTransaction answered at the fourth transmission")
    finally:
        out = cp.finish()
    for action in ("StartTransaction", "StopTransaction"):
        (uid, times), = attempts(cs, action)
        assert len(times) == 4, (action, times)
    assert " dropped" not in out, out
    for action in ("StartTransaction", "StopTransaction"):  # a silent link is dropped
        assert f"ocpp: {action} unanswered, nothing heard for 2 s: reconnecting" in out, out
    assert cs.transactions[txid]["reason"] == "EVDisconnected"
    assert not cs.unknown_tx and cs.invalid == [], (cs.unknown_tx, cs.invalid)
