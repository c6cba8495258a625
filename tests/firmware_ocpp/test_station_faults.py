"""What the charge point tells the central system when the station's safety code trips
(firmware/lib/station.py; the station double in fakestation.py keeps the same contract):

- a welded contactor: unseen while nothing is drawn, found when the next session's EV draws
  through the open contactor before the station closes it: StatusNotification Faulted
  PowerSwitchFailure with the current in `info`, that transaction stopped with reason
  EmergencyStop, and the fault latched (an unplug does not clear it; RemoteStartTransaction
  is Rejected);
- an EV drawing more than the pilot offers: after the grace, Faulted OverCurrentFailure,
  the transaction stopped with reason EmergencyStop, the contactor opened (no current in the
  last MeterValues); unplugging clears it, and the next session charges again.

Both runtimes (MicroPython: the 32-bit Unix port at a Pico W's heap)."""

import pytest
from csms import CentralSystem
from ocpp.v16 import call
from ocpp_scenarios import KEY, sampled, start

CP = "PICO-SAFETY"


@pytest.fixture
def cs():
    server = CentralSystem(password=KEY, heartbeat_s=30).start()
    yield server
    server.stop()


def faulted(cs):
    """The StatusNotifications of connector 1 that reported Faulted."""
    return [m for m in cs.of("StatusNotification", CP)
            if m["connector_id"] == 1 and m["status"] == "Faulted"]


def charge(cs, cp, tag):
    """Plug in, present `tag`, the EV asks for energy: the new transaction id once Charging."""
    known = set(cs.transactions)
    cp.ev(pilot="B", start=True, tag=tag)
    cs.wait(lambda: set(cs.transactions) - known, 30, "StartTransaction for %s" % tag)
    (txid,) = set(cs.transactions) - known
    cp.ev(pilot="C")
    cs.wait(lambda: cs.last_status(CP) == "Charging", 30, "Charging")
    return txid


@pytest.mark.dual_runtime
def test_a_welded_contactor_faults_the_connector_and_stops_the_transaction_that_finds_it(
        cs, runtime_name, tmp_path):
    cp = start(cs, runtime_name, tmp_path / "cp", CP)
    try:
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available")
        first = charge(cs, cp, "CARD1")
        cp.ev(weld=True)  # the contact welds while closed
        cp.ev(pilot="A")  # unplugged: nothing is drawn, so nothing shows the weld yet
        cs.wait(lambda: cs.transactions[first]["reason"] is not None, 30, "StopTransaction")
        assert cs.transactions[first]["reason"] == "EVDisconnected"
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available")
        assert not faulted(cs)

        # the next EV draws through the open contactor before the station would close it
        known = set(cs.transactions)
        cp.ev(pilot="B", start=True, tag="CARD2")
        cs.wait(lambda: set(cs.transactions) - known, 30, "StartTransaction for CARD2")
        (second,) = set(cs.transactions) - known
        cp.ev(pilot="C")
        cs.wait(lambda: faulted(cs), 30, "Faulted")
        cs.wait(lambda: cs.transactions[second]["reason"] is not None, 30, "StopTransaction")
        assert cs.transactions[second]["reason"] == "EmergencyStop"
        report = faulted(cs)[-1]
        assert (report["error_code"], report["info"]) == (
            "PowerSwitchFailure", "16.0 A with the contactor open"), report

        # latched: still Faulted after the EV leaves, and no remote start is taken
        cp.ev(pilot="A")
        cs.wait(lambda: cs.transactions[second]["meter_stop"] is not None, 30, "stopped")
        assert cs.call(CP, call.RemoteStartTransaction(id_tag="CARD3")).status == "Rejected"
        assert cs.last_status(CP) == "Faulted"
    finally:
        cp.finish()
    assert len(cs.transactions) == 2
    assert cs.invalid == [], cs.invalid


@pytest.mark.dual_runtime
def test_an_ev_drawing_more_than_offered_trips_over_current_until_it_is_unplugged(
        cs, runtime_name, tmp_path):
    cp = start(cs, runtime_name, tmp_path / "cp", CP, MeterValueSampleInterval=1,
               MeterValuesSampledData="Current.Import", StopTxnSampledData="Current.Import")
    try:
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available")
        txid = charge(cs, cp, "CARD1")
        cp.ev(draw_a=24.0)  # the EV ignores the 16 A the pilot offers
        cs.wait(lambda: faulted(cs), 30, "Faulted")
        report = faulted(cs)[-1]
        assert (report["error_code"], report["info"]) == (
            "OverCurrentFailure", "24.0 A over the 16 A offered"), report
        cs.wait(lambda: cs.transactions[txid]["reason"] is not None, 30, "StopTransaction")
        assert cs.transactions[txid]["reason"] == "EmergencyStop"
        # the transaction's meter values saw the over-draw, and its end the contactor open
        drawn = [float(sv["value"]) for mv in cs.transactions[txid]["values"]
                 for sv in sampled(mv, "Current.Import")]
        assert 24.0 in drawn, drawn
        (end,) = [sv for sv in sampled(cs.transactions[txid]["transaction_data"], "Current.Import")
                  if sv["context"] == "Transaction.End"]
        assert float(end["value"]) == 0.0, end
        assert cs.call(CP, call.RemoteStartTransaction(id_tag="CARD2")).status == "Rejected"

        # unplugging clears it; an EV that follows the offer charges again
        cp.ev(pilot="A", draw_a=None)
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available after the unplug")
        again = charge(cs, cp, "CARD2")
        assert again != txid
        cp.ev(pilot="A")
        cs.wait(lambda: cs.transactions[again]["reason"] is not None, 30, "StopTransaction")
        assert cs.transactions[again]["reason"] == "EVDisconnected"
    finally:
        cp.finish()
    assert len(faulted(cs)) == 1
    assert cs.invalid == [], cs.invalid
