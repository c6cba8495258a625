"""A station can only close and meter its own transactions, a closed transaction is never
rewritten, and every refusal is answered as OCPP requires and shown to operators as a
security event."""

from __future__ import annotations

from conftest import ahttp, charge_point, http, now_iso, register, run
from ocpp.v16 import call

ENERGY = {"measurand": "Energy.Active.Import.Register", "unit": "Wh"}


def _security_events(app, cp_id: str) -> list[dict]:
    status, events = http(app, "GET", f"/api/v1/chargepoints/{cp_id}/events?kind=security")
    assert status == 200, events
    return events


def test_a_station_cannot_stop_or_meter_another_stations_transaction(server):
    register(server, "CP-OWNER")
    register(server, "CP-INTRUDER")
    http(server, "POST", "/api/v1/idtags", {"id_tag": "DRIVER"})

    async def scenario():
        async with charge_point(server, "CP-OWNER") as owner, \
                charge_point(server, "CP-INTRUDER") as intruder:
            start = await owner.call(call.StartTransaction(
                connector_id=1, id_tag="DRIVER", meter_start=1000, timestamp=now_iso()))
            tx_id = start.transaction_id
            stop = await intruder.call(call.StopTransaction(
                meter_stop=999_899, timestamp=now_iso(), transaction_id=tx_id,
                id_tag="DRIVER", reason="Remote"))
            assert stop.id_tag_info == {"status": "Invalid"}
            await intruder.call(call.MeterValues(connector_id=1, transaction_id=tx_id, meter_value=[
                {"timestamp": now_iso(), "sampled_value": [dict(ENERGY, value="999899")]}]))
            # a transaction id nobody was ever given, and one far beyond any integer column
            for unknown in (tx_id + 1000, 10**23):
                await intruder.call(call.StopTransaction(
                    meter_stop=5, timestamp=now_iso(), transaction_id=unknown))
            _, tx = await ahttp(server, "GET", f"/api/v1/transactions/{tx_id}")
            assert tx["active"] is True and tx["meter_stop"] is None
            assert tx["meter_values"] == []
            # the owner still closes it normally
            await owner.call(call.StopTransaction(meter_stop=4000, timestamp=now_iso(),
                                                  transaction_id=tx_id, reason="Local"))
            return tx_id

    tx_id = run(scenario())
    _, tx = http(server, "GET", f"/api/v1/transactions/{tx_id}")
    assert tx["energy_wh"] == 3000 and tx["cp_id"] == "CP-OWNER"
    refused = sorted((e["detail"]["action"], e["detail"]["refused"])
                     for e in _security_events(server, "CP-INTRUDER"))
    assert refused == [("MeterValues", "foreign"), ("StopTransaction", "foreign"),
                       ("StopTransaction", "unknown"), ("StopTransaction", "unknown")]
    assert _security_events(server, "CP-OWNER") == []


def test_a_closed_transaction_is_not_rewritten_by_a_second_stop(server):
    register(server, "CP-BILL")

    async def scenario():
        async with charge_point(server, "CP-BILL") as cp:
            start = await cp.call(call.StartTransaction(
                connector_id=1, id_tag="ANY", meter_start=100, timestamp=now_iso()))
            tx_id = start.transaction_id
            stop = call.StopTransaction(meter_stop=2100, timestamp=now_iso(),
                                        transaction_id=tx_id, reason="EVDisconnected")
            await cp.call(stop)
            await cp.call(stop)  # the same stop again: a retransmission from the journal
            assert _security_events(server, "CP-BILL") == []
            await cp.call(call.StopTransaction(meter_stop=999_899, timestamp=now_iso(),
                                               transaction_id=tx_id, reason="Other"))
            return tx_id

    tx_id = run(scenario())
    _, tx = http(server, "GET", f"/api/v1/transactions/{tx_id}")
    assert (tx["meter_stop"], tx["energy_wh"], tx["stop_reason"]) == (2100, 2000, "EVDisconnected")
    (event,) = _security_events(server, "CP-BILL")
    assert (event["detail"]["action"], event["detail"]["refused"]) == ("StopTransaction", "closed")


def test_meter_values_of_the_stations_own_transaction_are_stored_after_commit(server):
    register(server, "CP-METER")

    async def scenario():
        async with charge_point(server, "CP-METER") as cp:
            start = await cp.call(call.StartTransaction(
                connector_id=1, id_tag="ANY", meter_start=0, timestamp=now_iso()))
            await cp.call(call.MeterValues(connector_id=1, transaction_id=start.transaction_id,
                                           meter_value=[{"timestamp": now_iso(), "sampled_value": [
                                               dict(ENERGY, value="250")]}]))
            # (that the answer waits for the commit is shown by test_answered_means_committed)
            _, tx = await ahttp(server, "GET", f"/api/v1/transactions/{start.transaction_id}")
            assert [m["value"] for m in tx["meter_values"]] == ["250"]

    run(scenario())
