"""What each fault does to the connector, on both runtimes: the status and error code the
connector logic derives, the contactor, and what the firmware reports."""

import pytest
from stationkit import boot, report, wait_until, wait_world

BASE = {"intervals": {"sensors_s": 2},
        "limits": {"over_temp_c": 40.0, "mcu_over_temp_c": 70.0}}


def charging(board):
    return wait_world(board, lambda w: w["relay_closed"] and w["current_a"] > 15,
                      what="charging")


@pytest.mark.dual_runtime
def test_sensor_and_pilot_faults_set_status_error_code_and_open_the_relay(board_factory,
                                                                          runtime_name,
                                                                          record_heap):
    board = boot(board_factory, BASE)
    board.control("plug", demand_a=16)
    board.wait_for(r"^status: Charging$")
    charging(board)

    # DHT11 stops answering: not a fault; the value goes stale, the error is reported
    board.control("sensor", name="dht", fault="timeout")
    r = wait_until(lambda: (lambda r: r if "dht_error" in r else None)(report(board)),
                   timeout=20, interval=0.5, what="dht error reported")
    assert r["dht_error"].startswith("timeout") and r["st"] == "Charging" and r["relay"]
    board.control("sensor", name="dht", fault=None)

    # over-temperature in the enclosure: Faulted/HighTemperature, contactor open
    mark = board.console.mark()
    board.control("temperature", value=45)
    board.wait_for(r"^status: Faulted HighTemperature \(enclosure 4\d C \(limit 40 C\)\)$",
                   start=mark, timeout=30)
    wait_world(board, lambda w: not w["relay_closed"] and w["current_a"] == 0, what="open")
    board.control("temperature", value=25)  # cooled 5 C below the limit: charging resumes
    board.wait_for(r"^status: Charging$", start=mark, timeout=30)
    charging(board)

    # the RP2040 itself too hot (checked by the safety timer)
    mark = board.console.mark()
    board.control("mcu_temperature", value=80)
    board.wait_for(r"^status: Faulted HighTemperature \(MCU 80 C \(limit 70 C\)\)$", start=mark)
    wait_world(board, lambda w: not w["relay_closed"], what="open")
    board.control("mcu_temperature", value=40)
    board.wait_for(r"^status: Charging$", start=mark)

    # the metering front end fails: PowerMeterFailure, no readings reported
    mark = board.console.mark()
    board.control("sensor", name="meter", fault=True)
    board.wait_for(r"^status: Faulted PowerMeterFailure \(no mains voltage on the meter\)$",
                   start=mark)
    r = report(board)
    assert "v" not in r and "a" not in r and r["faults"] == ["PowerMeterFailure"]
    assert not board.world()["relay_closed"]
    board.control("sensor", name="meter", fault=None)
    board.wait_for(r"^status: Charging$", start=mark)

    # pilot shorted to PE (state E)
    mark = board.console.mark()
    board.control("set", key="pilot_short", value=True)
    board.wait_for(r"^status: Faulted EVCommunicationError \(pilot short \(state E\)\)$",
                   start=mark)
    wait_world(board, lambda w: not w["relay_closed"], what="open")
    board.control("set", key="pilot_short", value=False)
    board.wait_for(r"^status: Charging$", start=mark)

    # the EV's diode is missing: latched until the EV is unplugged
    mark = board.console.mark()
    board.control("ev", diode_ok=False)
    board.wait_for(r"^status: Faulted EVCommunicationError \(pilot diode missing", start=mark)
    wait_world(board, lambda w: not w["relay_closed"], what="open")
    board.control("unplug")
    board.wait_for(r"^status: Available$", start=mark)
    board.control("ev", diode_ok=True)
    board.control("plug")
    board.wait_for(r"^status: Charging$", start=mark)
    if runtime_name == "micropython":
        record_heap(report(board)["heap"])


@pytest.mark.dual_runtime
def test_welded_contactor_is_detected_before_closing(board_factory):
    board = boot(board_factory, BASE, world={"relay_welded": True})
    board.control("plug", demand_a=16)
    board.wait_for(r"^status: Faulted PowerSwitchFailure \(1\d\.\d A with the contactor open\)$")
    w = board.world()
    assert not w["relay_closed"], "the firmware never closes a contactor that conducts"
    assert w["pilot"]["offered_a"] == 0  # the PWM stops: the EV stops drawing
    wait_world(board, lambda w: w["current_a"] == 0, what="the EV stops drawing")


@pytest.mark.dual_runtime
def test_over_current_trips_after_the_grace_time(board_factory):
    # a current transformer that reads 1.5x high: the firmware sees 24 A on a 16 A offer
    config = dict(BASE, calibration={"amps_per_adc_v": 45.0}, limits={"max_current_a": 16.0},
                  station={"over_current_ms": 1000})
    board = boot(board_factory, config)
    board.control("plug", demand_a=32)
    # 24 A read (the meter keeps its last good reading when a loaded host spoils a pass)
    board.wait_for(r"^status: Faulted OverCurrentFailure \(2[2-6]\.\d A over the 16 A offered\)$",
                   timeout=30)
    wait_world(board, lambda w: not w["relay_closed"], what="open")
    mark = board.console.mark()
    board.control("unplug")  # an unplug clears it
    board.wait_for(r"^status: Available$", start=mark)
