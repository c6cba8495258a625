"""A charging session end to end on the simulated world, on CPython and on MicroPython at
a Pico W's heap: plug in, authorise, charge at the offered current, smart-charging limit, the EV
suspending, stopping, unplugging; energy and power against the simulated load."""

import json
import re
import statistics
import time

import pytest
from stationkit import (
    assert_energy_within,
    boot,
    relay_open_latency,
    report,
    wait_until,
    wait_world,
)


def stored_wh(board) -> float:
    try:
        return float(json.loads((board.flash / "energy.json").read_text())["wh"])
    except (OSError, ValueError, KeyError):
        return -1.0

LOCAL = {"local": {"free_vend": False}, "limits": {"max_current_a": 20.0},
         "intervals": {"sensors_s": 2}}


def duty_for(amps):
    return amps / 0.6 / 100


@pytest.mark.dual_runtime
def test_plug_authorise_limit_suspend_stop_unplug(board_factory, runtime_name, record_heap):
    board = boot(board_factory, LOCAL, world={"ev_demand_a": 32.0})
    board.control("plug")
    board.wait_for(r"^status: Preparing$")
    w = board.world()
    assert w["pilot"]["state"] == "B" and not w["relay_closed"]
    assert w["pilot"]["offered_a"] == 0  # steady +12 V until someone authorises

    mark = board.console.mark()
    board.control("console", line='ev.start("TAG-1")')
    board.wait_for(r"^status: Charging$", start=mark)
    # charging at the offered current: max_current_a 20 A, the EV would take 32 A
    w = wait_world(board, lambda w: w["relay_closed"] and w["current_a"] > 19, what="charging")
    assert w["pilot"]["state"] == "C"
    assert w["pilot"]["duty"] == pytest.approx(duty_for(20), abs=0.001)
    assert w["current_a"] == pytest.approx(20.0, abs=0.01)

    # smart charging: a 10 A limit changes the PWM duty and the EV follows
    board.control("console", line="app.station.set_limit_a(10)")
    w = wait_world(board, lambda w: abs(w["pilot"]["duty"] - duty_for(10)) < 0.001,
                   what="duty for 10 A")
    assert w["pilot"]["offered_a"] == pytest.approx(10.0, abs=0.01)
    r = wait_world(board, lambda w: True) and report(board)
    assert r["lim"] == pytest.approx(10.0, abs=0.01)

    # the EV pauses itself: SuspendedEV, contactor open, PWM still offered
    mark = board.console.mark()
    board.control("ev", suspended=True)
    board.wait_for(r"^status: SuspendedEV$", start=mark)
    w = board.world()
    assert not w["relay_closed"] and w["pilot"]["state"] == "B"
    assert w["pilot"]["offered_a"] == pytest.approx(10.0, abs=0.01)
    mark = board.console.mark()
    board.control("ev", suspended=False)
    board.wait_for(r"^status: Charging$", start=mark)
    wait_world(board, lambda w: w["relay_closed"], what="contactor closed again")

    # a limit of 0 offers nothing: SuspendedEVSE
    mark = board.console.mark()
    board.control("console", line="app.station.set_limit_a(0)")
    board.wait_for(r"^status: SuspendedEVSE$", start=mark)
    wait_world(board, lambda w: not w["relay_closed"], timeout=5, what="relay open")
    board.control("console", line="app.station.set_limit_a(None)")
    board.wait_for(r"^status: Charging$", start=mark)

    # stop at the REPL: Finishing while the cable is in, Available after unplugging
    mark = board.console.mark()
    board.control("console", line="ev.stop()")
    board.wait_for(r"^status: Finishing$", start=mark)
    w = wait_world(board, lambda w: not w["relay_closed"], timeout=5, what="relay open")
    assert w["pilot"]["offered_a"] == 0
    board.control("unplug")
    board.wait_for(r"^status: Available$", start=mark)
    board.wait_for(r"^local: session ended \(Local\), \d+\.\d+ Wh$")
    if runtime_name == "micropython":
        record_heap(report(board)["heap"])


@pytest.mark.dual_runtime
def test_unplug_while_charging_opens_the_relay_within_100_ms(board_factory):
    board = boot(board_factory, {"intervals": {"sensors_s": 2}})  # free vend
    board.control("plug", demand_a=16)
    board.wait_for(r"^status: Charging$")
    wait_world(board, lambda w: w["relay_closed"] and w["current_a"] > 15, what="charging")
    board.control("unplug")
    w = wait_world(board, lambda w: not w["relay_closed"], timeout=5, what="relay open")
    # on the board's clock, from the instant the world unplugged the EV (not from a reading
    # the test took before its command went through)
    latency, stall = relay_open_latency(w)
    assert latency - stall <= 100 and latency <= 1000, \
        f"relay opened {latency} ms after the unplug ({stall} ms of it the host stalled the timer)"
    board.wait_for(r"^status: Available$")
    print(f"unplug -> relay open: {latency} ms (timer stalled {stall} ms)")


@pytest.mark.dual_runtime
def test_safety_timer_opens_the_relay_while_the_event_loop_is_blocked(board_factory):
    board = boot(board_factory, {"intervals": {"sensors_s": 2}})
    board.control("plug", demand_a=16)
    board.wait_for(r"^status: Charging$")
    wait_world(board, lambda w: w["relay_closed"] and w["current_a"] > 15, what="charging")
    wait_world(board, lambda w: w["energy_wh"] > 2, what="2 Wh delivered")
    mark = board.console.mark()
    # a technician's long command holds the event loop for 3 s
    board.control("console", line="import time; time.sleep(3); print('loop free again')")
    board.wait_for(r"^>>> import time; time\.sleep\(3\)", start=mark)
    board.control("unplug")
    w = wait_world(board, lambda w: not w["relay_closed"], timeout=5, what="relay open")
    assert not re.search(r"^loop free again$", board.console.text[mark:], re.M), \
        "the loop was not blocked"
    latency, stall = relay_open_latency(w)
    assert latency - stall <= 100 and latency <= 1000, (latency, stall)
    board.wait_for(r"^loop free again$", start=mark)
    board.wait_for(r"^status: Available$", start=mark)
    # the energy that flowed while the loop was blocked is counted up to the opening only
    # (the firmware cannot know the unplug instant better than the contactor opening)
    w = board.world()
    # tolerance: the meter's 2 % over the 3 s the loop was blocked (0.07 Wh at 3.7 kW), and
    # 3.7 kW for the latency measured above (a loaded host can stretch it past 100 ms)
    assert_energy_within(board, report(board)["wh"], w["energy_wh"],
                         0.07 + 3700 * latency / 3.6e6, (latency, stall))


def measurement(board) -> tuple[dict, tuple]:
    """The report and, from the same console line, whether the meter's last reading was
    forced and when it was taken."""
    mark = board.console.mark()
    board.control("console", line="ev.report(); m = app.station.meter; "
                                  "print('meter', int(m.forced), m.measured_ms)")
    line = board.wait_for(r"^report (\{.*\})$", timeout=20, start=mark)
    meter = board.wait_for(r"^meter (\d) (\d+)$", timeout=20, start=line.end())
    return json.loads(line.group(1)), (meter.group(1) == "1", int(meter.group(2)))


@pytest.mark.dual_runtime
def test_energy_and_power_match_the_simulated_load_within_2_percent(board_factory):
    board = boot(board_factory, {"intervals": {"sensors_s": 2}}, world={"mains_v": 235.0})
    board.control("plug", demand_a=16)
    wait_world(board, lambda w: w["relay_closed"] and w["current_a"] > 15, what="charging")
    wait_until(lambda: report(board).get("a", 0) > 15, what="the meter sees the load")
    powers, seen, deadline = [], set(), time.monotonic() + 60
    while len(powers) < 4 and time.monotonic() < deadline:
        r, (forced, measured_ms) = measurement(board)
        w = board.world()
        # four different measurements (a stalled loop keeps one for a while), none of them
        # forced: after MAX_SPOILED spoiled passes the meter reads what it has, which can be
        # a third off and is documented so (it judges faults, it is never billed)
        if not forced and measured_ms not in seen:
            seen.add(measured_ms)
            powers.append((r["w"], w["power_w"], r["a"], w["current_a"], r["v"], w["mains_v"]))
        time.sleep(0.3)  # station.meter_ms = 250
    assert len(powers) == 4, f"four unforced measurements in 60 s: {powers}"
    # The median of four measurements: on a shared host a measurement whose one-cycle
    # sampling window was interrupted by the OS scheduler can miss (a board's is exact).
    for column in range(0, 6, 2):
        firmware = statistics.median(p[column] for p in powers)
        world = statistics.median(p[column + 1] for p in powers)
        assert firmware == pytest.approx(world, rel=0.02), powers
    wait_world(board, lambda w: w["energy_wh"] >= 8.0, timeout=30, what="8 Wh delivered")
    board.control("ev", suspended=True)  # charging pauses: both registers stop moving
    wait_world(board, lambda w: not w["relay_closed"], what="relay open")
    w = board.world()
    r = report(board)
    r = report(board)  # one more sampling cycle after the contactor opened
    # 2 %, plus a third of the power for the time a loaded host left the meter with no good
    # measurement (billed on the last good power or a spoiled pass's reading; on a board
    # an interrupt storm could do the same): the firmware counts that time
    mark = board.console.mark()
    board.control("console", line="print('estimated %d ms' % app.station.estimated_ms)")
    estimated_ms = int(board.wait_for(r"^estimated (\d+) ms$", start=mark).group(1))
    allowed = 0.02 * w["energy_wh"] + 3800 * estimated_ms / 3.6e6 / 3
    # and half the power over the longest gap between two sampling cycles: the EV's own
    # stop (suspended) falls inside one such span, which the meter can only bill by its two
    # ends (the trapezoid); 250 ms on a board, longer when the host holds the loop (run 6 of
    # a fresh-clone series: 0.26 Wh low with a 416 ms loop gap)
    allowed += 3800 * max(250, r["loop_gap_ms"]) / 2 / 3.6e6
    assert_energy_within(board, r["wh"], w["energy_wh"], allowed, (r, estimated_ms))
    print(f"energy {r['wh']} Wh for {w['energy_wh']} delivered, {estimated_ms} ms estimated")
    # the stop persists the register (in the sampling cycle after the relay opened): then
    # a power cut keeps it
    wait_until(lambda: stored_wh(board) >= r["wh"] - 0.002, what="the register persisted")
    mark = board.console.mark()
    board.control("power_cut")
    board.wait_for(r"^ready: ", start=mark, timeout=40)
    board.control("console", line="import ev")
    after = report(board)
    assert after["wh"] == pytest.approx(r["wh"], abs=0.002)
