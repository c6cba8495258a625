"""The meter's RMS readings do not depend on how busy the host is (firmware/lib/meter.py on
the stand-ins, both runtimes).

A loaded host (or, on a board, an interrupt) can hold the sampling for milliseconds: a pair
read after the time it was stamped with, or a pass with a gap over a sixth of the mains
cycle. Such a pass read 18.6 A for 24 A and 225.9 V for 230 V in parallel suites. Here the
hold is made on purpose and reproducibly: the simulated ADC stalls 8 ms on a seeded random
one read in 150 (about half the passes have such a gap), and every reading must still be
within 1.5 % of the truth (2.5 % for the power): a held pair is read again, a spoiled pass is measured again, and
when all tries are spoiled the last good readings stay (for at most MAX_SPOILED)."""


import pytest

from tests.harness import run_script

SCRIPT = r"""
import machine, simworld, time
from meter import Meter
w = simworld.current()
w.ev_plugged = True
w.ev_demand_a = 16.0
machine.Pin(18, machine.Pin.OUT, value=1)
machine.PWM(machine.Pin(16), freq=1000, duty_u16=int(16 / 0.6 / 100 * 65535))
rng = simworld.Rng(7)
true_volts = w.adc_volts
def held_sometimes(channel, now_us=None):
    if channel != 0 and rng.random() < 1 / 150:
        time.sleep_ms(8)  # the host ran something else in the middle of the pass
    return true_volts(channel, now_us)
w.adc_volts = held_sometimes
m = Meter(machine, {"current_adc": 27, "voltage_adc": 28},
          {"amps_per_adc_v": 30.0, "volts_per_adc_v": 250.0, "meter_bias_v": 1.65}, 64, 1)
for k in range(40):
    m.measure()
    if m.measured_ms is None:  # (a spoiled first pass gives no reading yet)
        pass
    elif m.current_a is None:  # no mains seen in the pass
        print("NOREAD %d" % m.forced)
    else:
        print("READ %.3f %.2f %.1f %d" % (m.current_a, m.voltage_v, m.power_w, m.forced))
print("RETRIES", m.retries)
"""


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_rms_readings_stay_true_when_the_host_holds_the_sampling(runtime):
    out = run_script(runtime, SCRIPT, 120)
    rows = [tuple(map(float, line.split()[1:])) for line in out.splitlines()
            if line.startswith("READ ")]
    retries = int(out.split("RETRIES ")[1])
    assert len(rows) >= 20 and retries >= 10, out  # the holds did spoil passes
    # A reading the meter had to take from a spoiled pass (every try spoiled MAX_SPOILED + 1
    # times in a row: the injected holds plus a host loaded by a parallel suite) says so
    # (`forced`: not billed on, station.py); every other reading must be true.
    reads = [r[:3] for r in rows if not r[3]]
    # no mains seen: only ever in a forced pass (a spoiled one), never in a good one
    assert "NOREAD 0" not in out, out
    assert len(reads) >= 10, out
    # a pass that is kept may still have host jitter in it (gaps up to a sixth of the cycle)
    wrong = [r for r in reads if not (abs(r[0] - 16.0) <= 0.015 * 16 and abs(r[1] - 230.0) <= 0.015 * 230
                                      and abs(r[2] - 3680.0) <= 0.025 * 3680)]
    assert not wrong, "readings off by more than 1.5 %% (A, V) or 2.5 %% (W): %s" % wrong


STATION = r"""
import machine, dht, simworld, time
from config import DEFAULTS, merge
from storage import Flash
from station import Station
w = simworld.current()
w.ev_plugged = True
w.ev_demand_a = 16.0
st = Station(merge(DEFAULTS, {"limits": {"max_current_a": 16.0}}), Flash("."), machine, dht)
st.set_charging_allowed(True)
for k in range(40):  # the safety timer's ticks and the sampling task's cycles, by hand
    st._tick()
    st._tick()
    st.cycle()
    if st.relay_closed() and (st.meter.current_a or 0) > 15:
        break
print("CHARGING", st.relay_closed(), st.meter.current_a)
true_volts = w.adc_volts
reads = [0]
def held(channel, now_us=None):
    if channel == 1:
        reads[0] += 1
        if reads[0] % 16 == 0:
            time.sleep_ms(3)  # from now on every pass has gaps: every measurement is spoiled
    return true_volts(channel, now_us)
w.adc_volts = held
w.ev_plugged = False
for k in range(3):
    st._tick()
print("OPEN", st.relay_closed(), st.meter.current_a)
for k in range(6):
    time.sleep_ms(150)  # the sampling task's period (station.meter_ms), roughly
    st._tick()
    st.cycle()
print("FAULTS", st.faults())
print("ENERGY %.4f %.4f" % (st.energy_wh(), w.energy_wh))
"""


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_a_held_reading_is_neither_a_weld_nor_energy_after_the_contactor_opens(runtime, tmp_path):
    """The last good reading (16 A) kept through spoiled passes must not be judged as
    current through the contactor once it opened (PowerSwitchFailure), nor integrated as
    energy after the opening."""
    out = run_script(runtime, STATION, 120, cwd=tmp_path)
    assert "CHARGING True 1" in out and "OPEN False 1" in out, out
    assert "FAULTS []" in out, out
    firmware_wh, world_wh = map(float, out.split("ENERGY ")[1].split())
    assert firmware_wh == pytest.approx(world_wh, abs=0.05), out
STATION_SPOILED_AFTER_CLOSE = r"""
import machine, dht, simworld, time
from config import DEFAULTS, merge
from storage import Flash
from station import Station
w = simworld.current()
w.ev_plugged = True
w.ev_demand_a = 16.0
st = Station(merge(DEFAULTS, {"limits": {"max_current_a": 16.0}}), Flash("."), machine, dht)
st.set_charging_allowed(True)
# spoiled passes that the sine fit cannot read either (their pairs bunched in a part of the
# cycle; tests/unit/test_meter_arithmetic.py): the meter keeps, then forces, readings
st.meter.fit = lambda: None
true_volts = w.adc_volts
spoil = [False]
reads = [0]
def held(channel, now_us=None):
    v = true_volts(channel, now_us)
    if spoil[0] and channel == 1:  # the current transformer's channel (GP27)
        reads[0] += 1
        if reads[0] % 16 == 0:
            time.sleep_ms(3)  # every pass has gaps: every measurement is spoiled
        v = 1.65 + (v - 1.65) * 0.7  # and its reading 30 % low, as a spoiled pass may be
    return v
w.adc_volts = held
for k in range(40):  # the safety timer's ticks and the sampling task's cycles, by hand
    st._tick()
    st._tick()
    st.cycle()
    if st.relay_closed():
        break
spoil[0] = True  # from the closing on, the host spoils every pass for about 2 s
for k in range(12):
    time.sleep_ms(150)
    st._tick()
    st.cycle()
print("SPOILED", st.meter.forced, st.relay_closed())
spoil[0] = False
good = 0
for k in range(4):
    time.sleep_ms(150)
    st._tick()
    st.cycle()
    good += not st.meter.forced
w.ev_plugged = False  # the session ends: what the register holds at the opening is billed
unplugged_ms = time.ticks_ms()
for k in range(3):
    st._tick()
st.cycle()
print("GOOD", good)
print("UNPLUG_TO_OPEN_MS", time.ticks_diff(st.opened_ms, unplugged_ms))
print("ENERGY %.4f %.4f" % (st.energy_wh(), w.energy_wh))
"""


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_energy_is_billed_when_every_pass_after_the_closing_is_spoiled(runtime, tmp_path):
    """A loaded host spoils every pass for 2 s right after the contactor closed, and the sine
    fit cannot read them either: the last
    good power is from before the closing (0 W), so billing the forced readings' spans at it
    lost that energy (0.83 Wh billed for 3.57 here; a 3-minute soak billed 10 Wh for 13.1).
    The span waits for a good measurement, and is billed on the forced readings if the
    contactor opens first."""
    out = run_script(runtime, STATION_SPOILED_AFTER_CLOSE, 120, cwd=tmp_path)
    assert "SPOILED True True" in out, out
    firmware_wh, world_wh = map(float, out.split("ENERGY ")[1].split())
    assert world_wh > 1.5, out
    # The station bills the last power until the contactor opens: it cannot know of the
    # unplug before its safety timer reads the pilot (two ticks on a board, 40 ms; here the
    # ticks are called by hand, and a loaded host can hold them for a quarter of a second,
    # measured on the script's own clock)
    late_wh = 3680 * int(out.split("UNPLUG_TO_OPEN_MS ")[1].split()[0]) / 3.6e6
    if int(out.split("GOOD ")[1].split()[0]):
        # a good measurement came before the opening: it covers the span from the closing
        assert world_wh * 0.97 <= firmware_wh <= world_wh * 1.03 + late_wh, out
    else:
        # a loaded host spoiled those passes too: the span is billed on the forced readings,
        # which can be a third off (2.41 Wh for 3.59 in a full parallel run)
        assert firmware_wh == pytest.approx(world_wh, rel=0.4), out
