"""Power cuts at random moments during charging sessions: the MicroPython process (Unix
port, a Pico W's heap, the firmware installed as .mpy as on a board; the station test double
persists its energy register like the real one) is killed and restarted again and again -
while booting, while connecting, mid-session, right after the EV left. In the end the
central system holds every transaction exactly once, closed, with monotonic meter values.
The test prints the counts."""

import random
import re
import time

import pytest
from cprunner import ChargePointProcess
from csms import CentralSystem

CP = "PICO-CUT"
CUTS = 100
RUNTIME = "micropython"


@pytest.mark.slow(seconds=100)
@pytest.mark.cpu_hungry
@pytest.mark.timeout(600)  # niced: on a busy machine it yields the CPU and takes longer
def test_a_hundred_power_cuts_lose_and_duplicate_no_transaction(tmp_path):
    cs = CentralSystem(heartbeat_s=60).start()
    config = {"cp_id": CP, "ocpp": {"url": cs.url, "reconnect_min_s": 0.2,
                                    "keys": {"MeterValueSampleInterval": 1}}}
    rng = random.Random(20261126)
    work = tmp_path / "cp"
    starts_requested = 0
    cp = ChargePointProcess(RUNTIME, work, config)  # first boot: registration
    try:
        cs.wait(lambda: cs.booted(CP), 30, "BootNotification")
        cp.kill()
        for cut in range(CUTS):
            connects = cs.connects
            cp = ChargePointProcess(RUNTIME, work, config)
            phase = cut % 4
            if phase == 0 or rng.random() < 0.5:  # cut after the link is up, or while booting
                cs.wait(lambda c=connects: cs.connects > c, 30, "the charge point to reconnect")
            if phase == 0:  # a new session: plug in, present a card
                cp.ev(pilot="B")
                time.sleep(rng.uniform(0.1, 0.4))
                cp.ev(pilot="C", start=True, tag="CARD%d" % (cut // 4 % 5))
                starts_requested += 1
                if rng.random() < 0.3:  # the driver leaves before the power goes
                    time.sleep(rng.uniform(1.0, 2.0))
                    cp.ev(pilot="A")
            elif phase == 3:  # the EV leaves
                cp.ev(pilot="A")
            time.sleep(rng.uniform(0.2, 1.2))
            cp.kill()
        cp = ChargePointProcess(RUNTIME, work, config)
        cp.ev(pilot="A")

        def all_closed():  # as many transactions at the CS as the charge point started, all closed
            ids = set(re.findall(r"transaction #(\d+) started", cp.console()))
            txs = list(cs.transactions.values())
            return ids and len(txs) == len(ids) and all(t["meter_stop"] is not None for t in txs)

        cs.wait(all_closed, 60, "the journal to drain: every started transaction closed")
        # the unplug's StatusNotifications follow the last StopTransaction's answer (the
        # summary counts them as queued until they are sent)
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "the connector reported Available")
        out = cp.finish()
    finally:
        cs.stop()
    started = set(int(n) for n in re.findall(r"transaction #(\d+) started", out))
    txs = [cs.transactions[t] for t in sorted(cs.transactions)]
    reasons = {}
    for tx in txs:
        reasons[tx["reason"]] = reasons.get(tx["reason"], 0) + 1
    print("\npower cuts: %d, sessions begun: %d, transactions started by the charge point: %d, "
          "held by the CS: %d, closed: %d, redeliveries after a cut: %d, stop reasons: %s"
          % (CUTS, starts_requested, len(started), len(txs),
             sum(1 for t in txs if t["meter_stop"] is not None), len(cs.redeliveries), reasons))
    assert '"queued": 0' in out.rsplit("SUMMARY", 1)[-1], (
        "the queue is empty at the end: " + out.rsplit("QUEUED", 1)[-1].strip())
    assert len(txs) == len(started) > 0
    assert all(t["meter_stop"] is not None for t in txs)
    assert not cs.unknown_tx and not cs.double_stops and cs.invalid == []
    last = 0
    for tx in txs:
        values = [int(sv["value"]) for mv in tx["values"] for v in mv for sv in v["sampled_value"]
                  if sv.get("measurand") == "Energy.Active.Import.Register"]
        series = [tx["meter_start"]] + values + [tx["meter_stop"]]
        assert series == sorted(series), tx
        assert tx["meter_start"] >= last, (tx, last)
        last = tx["meter_stop"]
    assert reasons.get("PowerLoss", 0) > 0 and reasons.get("EVDisconnected", 0) > 0
