"""Meter values (OCPP 1.6 §3.16 and the Core configuration keys) against the independent
central system: clock-aligned values (ClockAlignedDataInterval, MeterValuesAlignedData)
with context Sample.Clock at aligned timestamps, idle and during a transaction;
StopTxnAlignedData in the StopTransaction's transactionData; every measurand of
MeterValuesSampledData with its unit."""

from datetime import datetime

import pytest
from ocpp.v16 import call
from ocpp_scenarios import sampled, start

CP = "PICO-METER"
ALIGNED = 5  # ClockAlignedDataInterval (s)
MEASURANDS = {"Energy.Active.Import.Register": "Wh", "Power.Active.Import": "W", "Current.Import": "A",
              "Current.Offered": "A", "Voltage": "V", "Temperature": "Celsius"}


def unix(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())


def aligned_meter_values(cs, in_tx):
    return [m for m in cs.of("MeterValues", CP)
            if m["meter_value"][0]["sampled_value"][0].get("context") == "Sample.Clock"
            and ("transaction_id" in m) == in_tx]


@pytest.mark.dual_runtime
def test_clock_aligned_and_sampled_meter_values_with_units(cs, runtime_name, tmp_path):
    cp = start(cs, runtime_name, tmp_path / "cp", CP, StopTxnSampledData="",
               MeterValuesSampledData=",".join(MEASURANDS), MeterValueSampleInterval=2)
    try:
        for key, value in (("MeterValuesAlignedData", "Energy.Active.Import.Register,Voltage,Current.Import"),
                           ("StopTxnAlignedData", "Energy.Active.Import.Register,Current.Offered"),
                           ("ClockAlignedDataInterval", str(ALIGNED))):
            assert cs.call(CP, call.ChangeConfiguration(key=key, value=value)).status == "Accepted"
        # idle: clock-aligned values without a transaction
        cs.wait(lambda: len(aligned_meter_values(cs, False)) >= 2, 30, "two idle clock-aligned MeterValues")

        cp.ev(pilot="B", start=True, tag="CARD1")
        cs.wait(lambda: cs.transactions, 30, "StartTransaction")
        cp.ev(pilot="C")
        cs.wait(lambda: cs.last_status(CP) == "Charging", 30, "Charging")
        txid = max(cs.transactions)
        cs.wait(lambda: len(aligned_meter_values(cs, True)) >= 2, 30, "two clock-aligned MeterValues in the transaction")
        cs.wait(lambda: len([mv for mv in cs.transactions[txid]["values"]
                             if mv[0]["sampled_value"][0]["context"] == "Sample.Periodic"]) >= 2,
                30, "two sampled MeterValues while charging")
        cp.ev(pilot="A")
        cs.wait(lambda: cs.transactions[txid]["meter_stop"] is not None, 30, "StopTransaction")
    finally:
        cp.finish()
    assert cs.invalid == [], cs.invalid

    # clock-aligned: context Sample.Clock, the aligned measurands, timestamps on the boundaries
    idle = aligned_meter_values(cs, False)
    in_tx = aligned_meter_values(cs, True)
    stamps = []
    for m in idle + in_tx:
        (mv,) = m["meter_value"]
        assert unix(mv["timestamp"]) % ALIGNED == 0, mv["timestamp"]
        stamps.append(unix(mv["timestamp"]))
        assert [(sv["measurand"], sv["unit"], sv["context"]) for sv in mv["sampled_value"]] == [
            ("Energy.Active.Import.Register", "Wh", "Sample.Clock"), ("Voltage", "V", "Sample.Clock"),
            ("Current.Import", "A", "Sample.Clock")]
    assert stamps == sorted(set(stamps)), stamps
    assert all(m["transaction_id"] == txid and m["connector_id"] == 1 for m in in_tx)

    # sampled: every measurand of MeterValuesSampledData with its unit
    tx = cs.transactions[txid]
    periodic = [mv for mv in tx["values"] if mv[0]["sampled_value"][0]["context"] == "Sample.Periodic"]
    charging = [mv for mv in periodic if float(sampled(mv, "Current.Import")[0]["value"]) > 0]
    assert charging, periodic
    for mv in periodic:
        assert {sv["measurand"]: sv["unit"] for sv in mv[0]["sampled_value"]} == MEASURANDS
    sv = {s["measurand"]: s for s in charging[-1][0]["sampled_value"]}
    assert float(sv["Voltage"]["value"]) == 230.0
    assert float(sv["Current.Offered"]["value"]) == 16.0 == float(sv["Current.Import"]["value"])
    assert float(sv["Power.Active.Import"]["value"]) == 16.0 * 230.0
    assert float(sv["Temperature"]["value"]) == 24.0 and sv["Temperature"]["location"] == "Body"

    # StopTxnAlignedData: the transaction's clock-aligned values in transactionData
    data = tx["transaction_data"]
    assert data, tx
    for entry in data:
        assert unix(entry["timestamp"]) % ALIGNED == 0, entry
        assert [(s["measurand"], s["unit"], s["context"]) for s in entry["sampled_value"]] == [
            ("Energy.Active.Import.Register", "Wh", "Sample.Clock"), ("Current.Offered", "A", "Sample.Clock")]
    assert unix(tx["start"]) <= unix(data[0]["timestamp"]) <= unix(data[-1]["timestamp"]) <= unix(tx["stop"])
    registers = [int(s["value"]) for e in data for s in e["sampled_value"] if s["measurand"].startswith("Energy")]
    assert tx["meter_start"] <= registers[0] <= registers[-1] <= tx["meter_stop"]
