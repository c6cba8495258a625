"""Power limits on a single-phase station: a limit in W becomes W / 230 V on the one phase
the station has, whatever numberPhases says (OCPP 1.6 assumes 3 when it is absent, but a
single-phase EVSE can only use one), and a composite schedule asked in W reports A x 230
with numberPhases 1, so the two directions agree."""

import pytest
from ocpp.v16 import call
from ocpp_scenarios import start

CP = "PICO-UNITS"


def default_profile(watts, phases=None):
    period = {"startPeriod": 0, "limit": watts}
    if phases is not None:
        period["numberPhases"] = phases
    return {"chargingProfileId": 5, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": {
                "startSchedule": "2020-01-01T00:00:00Z", "chargingRateUnit": "W",
                "chargingSchedulePeriod": [period]}}


@pytest.mark.dual_runtime
def test_watt_limits_use_the_stations_one_phase_in_both_directions(cs, runtime_name, tmp_path):
    cp = start(cs, runtime_name, tmp_path / "cp", CP)
    try:
        for phases in (None, 3, 1):
            assert cs.call(CP, call.SetChargingProfile(
                connector_id=1, cs_charging_profiles=default_profile(2300, phases))).status == "Accepted"
            amps = cs.call(CP, call.GetCompositeSchedule(connector_id=1, duration=600, charging_rate_unit="A"))
            assert amps.charging_schedule["charging_schedule_period"][0]["limit"] == 10, phases
            watts = cs.call(CP, call.GetCompositeSchedule(connector_id=1, duration=600, charging_rate_unit="W"))
            first = watts.charging_schedule["charging_schedule_period"][0]
            assert (first["limit"], first["number_phases"]) == (2300, 1), phases
    finally:
        cp.finish()
    assert cs.invalid == [], cs.invalid
