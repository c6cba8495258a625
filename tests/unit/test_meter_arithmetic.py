"""firmware/lib/meter.py: the arithmetic of the energy meter on buffers filled by the test.

- `Meter.compute`: RMS current and voltage and real power P = mean(v x i) over whole mains
  cycles, time-weighted (`_weight`: each pair stands for the time from the midpoint before
  it to the one after, wrapping around the window), with the DC offset seeded from the
  first pass's mean and then tracked halfway each pass (re-seeded after a jump over 1000).
- `Meter.fit`: a spoiled pass (gaps over a tenth of the cycle) read by a least-squares fit
  of the mains sine at the pairs' own times: true for a pass with gaps, None for samples
  bunched in a part of the cycle.
- `Meter.measure`'s decisions: no mains (V rms < 50 V) is no reading, below 0.25 A reads
  0, negative power reads 0, a spoiled pass is read by the fit, and one the fit cannot read
  keeps the last readings for MAX_SPOILED measurements and then gives a `forced` reading
  that does not move the offsets.
- `Register`: integrates Wh, never backwards; persists when 50 Wh are pending and 60 s
  passed, or every 900 s while anything is pending, or on `save()`; a failed write keeps
  the value in RAM and is retried.

Scale: ADC u16 -> volts is 3.3 / 65535; the calibration here gives 30 A and 250 V per ADC
volt, so one ADC step is 3.3 x 30 / 65535 A and 3.3 x 250 / 65535 V.
"""

from __future__ import annotations

import math

import pytest

from tests.unit.fwimport import FakeTicks, load

pytestmark = pytest.mark.unit

meter = load("meter")

N = 40                 # pairs per pass
PERIOD_US = 20000      # one 50 Hz cycle
STEP_US = PERIOD_US // N
MID = 32768            # the ADC's mid-scale (the 1.65 V bias)
AMPS_PER_STEP = 3.3 * 30.0 / 65535
VOLTS_PER_STEP = 3.3 * 250.0 / 65535
CALIBRATION = {"amps_per_adc_v": 30.0, "volts_per_adc_v": 250.0, "meter_bias_v": 1.65}


class FakeMachine:
    def Pin(self, number, *args, **kwargs):  # noqa: N802 - machine's API
        return number

    def ADC(self, pin):  # noqa: N802
        return pin


@pytest.fixture
def clock(monkeypatch):
    ticks = FakeTicks(start_ms=1000)
    monkeypatch.setattr(meter, "time", ticks)
    return ticks


@pytest.fixture
def m(clock):
    return meter.Meter(FakeMachine(), {"current_adc": 27, "voltage_adc": 28}, CALIBRATION, N, 1)


def fill(m, current, voltage, times=None):
    """Fill the meter's buffers: current(t) and voltage(t) in ADC steps around MID."""
    times = times or [k * STEP_US for k in range(N)]
    for k, t in enumerate(times):
        m.buf_t[k] = t
        m.buf_i[k] = round(MID + current(t))
        m.buf_v[k] = round(MID + voltage(t))


def square(amplitude, shift_us=0):
    return lambda t: amplitude if (t + shift_us) % PERIOD_US < PERIOD_US // 2 else -amplitude


def sine(amplitude, phase=0.0):
    return lambda t: amplitude * math.sin(2 * math.pi * t / PERIOD_US + phase)


def test_the_meter_is_set_up_for_whole_50_hz_cycles(m):
    assert (m.period_us, m.max_gap_us) == (20000, 2000)
    assert m.k_i == pytest.approx(AMPS_PER_STEP) and m.k_v == pytest.approx(VOLTS_PER_STEP)
    assert m.off_i == m.off_v == pytest.approx(MID - 0.5)  # 1.65 V of 3.3 V
    hz60 = meter.Meter(FakeMachine(), {"current_adc": 27, "voltage_adc": 28},
                       dict(CALIBRATION, mains_hz=60), 64, 3)
    assert hz60.period_us == 50000 and hz60.max_gap_us == 5000
    assert len(hz60.buf_i) == len(hz60.buf_v) == len(hz60.buf_t) == 64


def test_a_square_wave_reads_its_amplitude_and_power_exactly(m):
    fill(m, square(2000), square(18000))
    irms, vrms, power = m.compute()
    assert irms == pytest.approx(2000 * AMPS_PER_STEP)     # 3.0213 A
    assert vrms == pytest.approx(18000 * VOLTS_PER_STEP)   # 226.60 V
    assert power == pytest.approx(irms * vrms)             # in phase: P = V I
    assert irms == pytest.approx(3.0212863)
    assert vrms == pytest.approx(226.59648)


def test_current_against_the_voltage_is_negative_power_and_in_quadrature_none(m):
    fill(m, square(2000, shift_us=PERIOD_US // 2), square(18000))
    irms, vrms, power = m.compute()
    assert power == pytest.approx(-irms * vrms)
    fill(m, square(2000, shift_us=PERIOD_US // 4), square(18000))
    assert m.compute()[2] == pytest.approx(0.0, abs=1e-9)


def test_a_sine_reads_amplitude_over_root_2_and_power_follows_the_phase(m):
    fill(m, sine(15000), sine(18000))
    irms, vrms, power = m.compute()
    assert irms == pytest.approx(15000 / math.sqrt(2) * AMPS_PER_STEP, rel=2e-4)
    assert vrms == pytest.approx(18000 / math.sqrt(2) * VOLTS_PER_STEP, rel=2e-4)
    assert power == pytest.approx(irms * vrms, rel=5e-4)
    fill(m, sine(15000, phase=math.pi / 3), sine(18000))  # cos 60 deg = 0.5
    irms, vrms, power = m.compute()
    assert power == pytest.approx(0.5 * irms * vrms, rel=1e-3)


def test_the_dc_offset_is_the_first_passs_mean_not_the_nominal_bias(m):
    fill(m, lambda t: -2768 + square(2000)(t), lambda t: 1000 + square(18000)(t))
    irms, vrms, _ = m.compute()
    assert (m.off_i, m.off_v) == (MID - 2768, MID + 1000)
    assert irms == pytest.approx(2000 * AMPS_PER_STEP)
    assert vrms == pytest.approx(18000 * VOLTS_PER_STEP)
    assert not m.first


def test_the_offset_then_moves_halfway_to_each_passs_mean_and_reseeds_after_a_jump(m):
    fill(m, square(2000), square(18000))
    m.compute()
    assert m.off_i == MID
    fill(m, lambda t: 400 + square(2000)(t), lambda t: -600 + square(18000)(t))
    m.compute()
    assert (m.off_i, m.off_v) == (MID + 200, MID - 300)
    fill(m, lambda t: 1500 + square(2000)(t), square(18000))  # a jump over 1000 steps
    m.compute()
    assert (m.off_i, m.off_v) == (MID + 1500, MID)


def test_a_pass_not_tracked_leaves_the_offsets(m):
    fill(m, square(2000), square(18000))
    m.compute()
    fill(m, lambda t: 400 + square(2000)(t), square(18000))
    irms, _, _ = m.compute(track=False)
    assert (m.off_i, m.off_v) == (MID, MID)
    # read against the kept offset, the 400-step shift adds in quadrature
    assert irms == pytest.approx(math.hypot(2000, 400) * AMPS_PER_STEP)


def test_each_pair_weighs_the_time_between_its_neighbours_wrapping_around_the_window():
    times = [0, 100, 250, 300]
    weights = [meter.Meter._weight(k, 4, times, 400) for k in range(4)]
    assert weights == [200, 250, 200, 150]  # 100-(300-400), 250-0, 300-100, (0+400)-250
    assert sum(weights) == 2 * 400
    assert [meter.Meter._weight(k, 4, [0, 100, 200, 300], 400) for k in range(4)] == [200] * 4
    assert meter.Meter._weight(0, 1, [123], 400) == 800


def test_pairs_read_late_do_not_bias_the_rms(m):
    # five pairs held 300 us each (an interrupt): their values are from the later time
    times = [k * STEP_US + (300 if 5 <= k < 10 else 0) for k in range(N)]
    fill(m, sine(20000), sine(18000), times)
    irms, _, _ = m.compute()
    truth = 20000 / math.sqrt(2) * AMPS_PER_STEP
    assert irms == pytest.approx(truth, rel=1e-3)
    unweighted = math.sqrt(sum((m.buf_i[k] - MID) ** 2 for k in range(N)) / N) * AMPS_PER_STEP
    assert abs(unweighted / truth - 1) > 5e-3  # what a plain mean would have read


def test_a_pass_stretched_past_its_window_never_raises(m):
    # the last pair stamped after the window's end: its neighbour's weight goes negative
    times = [k * STEP_US for k in range(N - 1)] + [PERIOD_US + 3000]
    fill(m, square(2000), square(18000), times)
    irms, vrms, power = m.compute()
    assert irms >= 0 and vrms >= 0 and math.isfinite(power)


# --- measure(): what a pass's numbers become ------------------------------------------------

def passes(m, current, voltage, gap=STEP_US, times=None):
    """Give the meter a sample() that fills the buffers and reports `gap` (us)."""
    def sample():
        fill(m, current, voltage, times)
        return gap
    m.sample = sample


def test_a_measurement_with_mains_and_load_reads_current_voltage_and_power(m, clock):
    passes(m, square(2000), square(18000))
    assert m.measure() is True
    assert m.current_a == pytest.approx(3.0212863)
    assert m.voltage_v == pytest.approx(226.59648)
    assert m.power_w == pytest.approx(m.current_a * m.voltage_v)
    assert m.ok and not m.forced and m.measured_ms == clock.ticks_ms()


def test_below_the_noise_floor_current_and_power_read_zero(m):
    steps_0_2_a = round(0.2 / AMPS_PER_STEP)
    passes(m, square(steps_0_2_a), square(18000))
    assert m.measure() is True
    assert (m.current_a, m.power_w) == (0.0, 0.0)
    assert m.voltage_v == pytest.approx(226.59648)


def test_negative_power_reads_zero(m):
    passes(m, square(2000, shift_us=PERIOD_US // 2), square(18000))
    m.measure()
    assert m.current_a == pytest.approx(3.0212863) and m.power_w == 0.0


def test_without_mains_there_is_no_reading_and_the_offsets_are_seeded_again(m):
    passes(m, square(2000), square(18000))
    m.measure()
    steps_40_v = round(40 / VOLTS_PER_STEP)
    passes(m, square(2000), square(steps_40_v))
    assert m.measure() is False
    assert (m.current_a, m.voltage_v, m.power_w, m.ok, m.first) == (None, None, None, False, True)


# a pass held after its first quarter and read back to back after that: all its pairs within
# a sixth of the cycle, which no fit can read
BUNCHED = [k * 80 for k in range(N)]


def test_a_pass_with_gaps_is_read_true_by_the_sine_fit(m):
    # pairs missing for 6 ms in the middle of the cycle, then late by 9 ms at the end
    times = [k * STEP_US for k in range(10)] + [6000 + k * STEP_US for k in range(10, 30)]
    times += [9000 + k * STEP_US for k in range(30, N)]
    fill(m, sine(20000, 0.3), sine(18000), times)
    irms, vrms, power = m.fit()
    assert irms == pytest.approx(20000 / math.sqrt(2) * AMPS_PER_STEP, rel=1e-4)
    assert vrms == pytest.approx(18000 / math.sqrt(2) * VOLTS_PER_STEP, rel=1e-4)
    assert power == pytest.approx(irms * vrms * math.cos(0.3), rel=1e-4)
    irms_weighted, _, _ = m.compute(track=False)
    assert abs(irms_weighted / irms - 1) > 0.02  # what the time-weighted RMS reads of it


def test_the_fit_refuses_pairs_bunched_in_a_part_of_the_cycle(m):
    fill(m, sine(20000), sine(18000), BUNCHED)
    assert m.fit() is None


def test_a_spoiled_pass_that_spreads_over_the_cycle_is_a_good_reading(m):
    passes(m, sine(20000), sine(18000), gap=m.max_gap_us + 1)
    assert m.measure() is True
    assert (m.spoiled, m.retries, m.fitted, m.forced) == (0, 3, 1, False)
    assert m.current_a == pytest.approx(20000 / math.sqrt(2) * AMPS_PER_STEP, rel=1e-3)


def test_spoiled_passes_keep_the_last_reading_then_give_a_forced_one(m):
    passes(m, square(2000), square(18000))
    m.measure()
    good = (m.current_a, m.voltage_v, m.power_w)
    passes(m, lambda t: 500 + square(4000)(t), square(18000), gap=m.max_gap_us + 1,
           times=BUNCHED)
    for n in range(1, meter.MAX_SPOILED + 1):
        assert m.measure() is True
        assert (m.current_a, m.voltage_v, m.power_w) == good and not m.forced
        assert (m.spoiled, m.retries) == (n, 3 * n)
    m.measure()
    assert m.forced and m.spoiled == 0 and m.fitted == 0
    assert m.off_i == MID  # a spoiled pass's mean is not taken as the offset
    assert m.current_a == pytest.approx(m.compute(track=False)[0])  # the pass, as it is
    passes(m, square(2000), square(18000))
    m.measure()
    assert not m.forced and m.current_a == pytest.approx(good[0])


def test_a_pass_whose_last_pair_is_past_the_window_is_measured_again(m):
    calls = []

    def sample():
        calls.append(1)
        last = PERIOD_US if len(calls) == 1 else PERIOD_US - STEP_US
        fill(m, square(2000), square(18000), [k * STEP_US for k in range(N - 1)] + [last])
        return STEP_US
    m.sample = sample
    m.measure()
    assert len(calls) == 2 and m.retries == 1


# --- Register ------------------------------------------------------------------------------

def test_a_new_register_starts_at_zero_or_at_what_the_flash_holds(fake_flash, clock):
    assert meter.Register(fake_flash).wh == 0.0
    fake_flash.write_json("energy.json", {"wh": 1234.5})
    reg = meter.Register(fake_flash)
    assert reg.wh == reg.saved_wh == 1234.5


@pytest.mark.parametrize("content", [b"{broken", b"[1, 2]", b'{"wh": "many"}', b'{"wh": null}',
                                     b'"1234"'])
def test_an_unreadable_register_file_starts_at_zero(fake_flash, clock, content):
    fake_flash.files["energy.json"] = content
    assert meter.Register(fake_flash).wh == 0.0


def test_energy_is_added_but_never_taken_away(fake_flash, clock):
    reg = meter.Register(fake_flash)
    reg.add(1.25)
    reg.add(0.75)
    reg.add(-5.0)
    reg.add(0)
    assert reg.wh == 2.0


def test_pending_energy_is_written_once_50_wh_and_60_s_are_reached(fake_flash, clock):
    reg = meter.Register(fake_flash)
    reg.add(49.9)
    clock.advance_ms(61_000)
    reg.add(0.0)
    assert fake_flash.writes == 0  # 49.9 Wh pending: not yet
    reg.add(0.1)
    assert fake_flash.writes == 1 and fake_flash.json("energy.json") == {"wh": 50.0}
    reg.add(60.0)  # 60 Wh at once, but only just written: wait for the 60 s
    assert fake_flash.writes == 1
    clock.advance_ms(59_999)
    reg.add(0.0)
    assert fake_flash.writes == 1
    clock.advance_ms(1)
    reg.add(0.0)
    assert fake_flash.writes == 2 and fake_flash.json("energy.json") == {"wh": 110.0}


def test_a_little_pending_energy_is_written_after_900_s(fake_flash, clock):
    reg = meter.Register(fake_flash)
    reg.add(0.001)
    clock.advance_ms(899_999)
    assert reg.maybe_save() is False
    clock.advance_ms(1)
    assert reg.maybe_save() is True
    assert fake_flash.json("energy.json") == {"wh": 0.001}


def test_nothing_pending_is_never_written(fake_flash, clock):
    reg = meter.Register(fake_flash)
    clock.advance_ms(10_000_000)
    assert reg.maybe_save() is False and reg.save() is False
    assert fake_flash.writes == 0


def test_save_writes_on_demand_rounded_to_the_milliwatt_hour(fake_flash, clock):
    reg = meter.Register(fake_flash)
    reg.add(12.34567)
    assert reg.save() is True
    assert fake_flash.json("energy.json") == {"wh": 12.346}
    assert reg.save() is False  # unchanged: no second write
    assert (reg.writes, fake_flash.writes) == (1, 1)
    assert meter.Register(fake_flash).wh == 12.346  # what a reboot reads


def test_a_failed_write_keeps_the_energy_and_is_retried(fake_flash, clock):
    flash_full = load("storage").FlashFull
    reg = meter.Register(fake_flash)
    fake_flash.fail_writes = flash_full(28, "flash full")
    reg.add(100.0)
    clock.advance_ms(61_000)
    assert reg.maybe_save() is False
    assert reg.wh == 100.0 and reg.saved_wh == 0.0 and reg.writes == 0
    fake_flash.fail_writes = None
    assert reg.maybe_save() is True
    assert fake_flash.json("energy.json") == {"wh": 100.0}


def test_the_write_interval_holds_across_the_tick_counters_wrap(fake_flash, monkeypatch):
    ticks = FakeTicks(start_ms=(1 << 30) - 30_000)  # 30 s before ticks_ms wraps to 0
    monkeypatch.setattr(meter, "time", ticks)
    reg = meter.Register(fake_flash)
    reg.add(100.0)  # 100 Wh pending but 0 s since the last write
    assert fake_flash.writes == 0
    ticks.advance_ms(45_000)  # past the wrap: 45 s, not minus 2^30 ms
    assert ticks.ticks_ms() < reg.saved_ms
    assert reg.maybe_save() is False
    ticks.advance_ms(15_000)
    assert reg.maybe_save() is True
