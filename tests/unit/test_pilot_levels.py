"""firmware/lib/pilot.py: the IEC 61851-1 control pilot arithmetic. The duty the EVSE
drives for an offer and the current a duty offers (Annex A: 10..85 % duty -> duty x 0.6 A,
85..96 % -> (duty - 64) x 2.5 A, 8..10 % -> 6 A, 96..97 % -> 80 A, anything else 0), the
state A..F a high level means (nominal +12/+9/+6/+3/0/-12 V, decided halfway between, with
0.4 V of hysteresis for the current state), the Classifier's debounce and its missing-diode
check (the low level must reach below -10 V while the PWM runs), `Pilot.offer`'s PWM
duty_u16 and `Pilot.sample`'s ADC -> pilot volts (8 V of pilot per ADC volt, 1.65 V bias).
tests/test_pilot_table.py checks the band edges of the table against the standard too,
and the round trip through the simulated EV on both runtimes."""

from __future__ import annotations

import pytest

from tests.unit.fwimport import FakeTicks, load

pytestmark = pytest.mark.unit

pilot = load("pilot")


# --- duty <-> amps ----------------------------------------------------------------------

# (duty %, amps) computed by hand: 10..85 % -> duty x 0.6 (duty as a fraction: d x 100 x 0.6)
@pytest.mark.parametrize("duty,amps", [
    (10, 6.0), (10.5, 6.3), (16, 9.6), (25, 15.0), (50, 30.0), (53.3, 31.98), (80, 48.0),
    (84.9, 50.94), (85, 51.0),
])
def test_from_10_to_85_percent_a_duty_offers_duty_times_0_6_amps(duty, amps):
    assert pilot.amps_for_duty(duty) == pytest.approx(amps)


# 85..96 % -> (duty - 64) x 2.5
@pytest.mark.parametrize("duty,amps", [
    (85.2, 53.0), (86, 55.0), (88, 60.0), (90, 65.0), (92, 70.0), (95, 77.5), (96, 80.0),
])
def test_from_85_to_96_percent_a_duty_offers_duty_minus_64_times_2_5_amps(duty, amps):
    assert pilot.amps_for_duty(duty) == pytest.approx(amps)


@pytest.mark.parametrize("duty,amps", [
    (8, 6.0), (9.99, 6.0), (96.01, 80.0), (97, 80.0),          # the 6 A and 80 A bands
    (0, 0.0), (3, 0.0), (5, 0.0), (7, 0.0), (7.99, 0.0),       # off, digital communication
    (97.01, 0.0), (100, 0.0), (-5, 0.0), (150, 0.0),           # steady +12 V, nonsense
])
def test_the_band_edges_and_everything_outside_the_table(duty, amps):
    assert pilot.amps_for_duty(duty) == amps


def test_the_two_formulas_meet_at_85_percent_with_a_gap_of_1_5_amps():
    assert pilot.amps_for_duty(85) == pytest.approx(51.0)
    assert pilot.amps_for_duty(85.0001) == pytest.approx(52.50025)


@pytest.mark.parametrize("amps,duty", [
    (6, 10.0), (10, 100 / 6), (13, 65 / 3), (16, 80 / 3), (32, 160 / 3), (48, 80.0),
    (51, 85.0), (53, 85.2), (63, 89.2), (80, 96.0),
])
def test_an_offer_drives_the_standards_duty(amps, duty):
    assert pilot.duty_pct(amps) == pytest.approx(duty)


@pytest.mark.parametrize("amps", [None, -1, 0, 5.99])
def test_below_6_amps_nothing_is_offered(amps):
    assert pilot.duty_pct(amps) == 0.0


def test_between_51_and_52_5_amps_the_offer_stays_at_51_never_more_than_asked():
    for amps in (51.1, 52, 52.5):
        assert pilot.duty_pct(amps) == pytest.approx(85.0)
        assert pilot.amps_for_duty(pilot.duty_pct(amps)) == pytest.approx(51.0)


def test_above_80_amps_the_offer_is_80():
    assert pilot.duty_pct(81) == pilot.duty_pct(500) == pytest.approx(96.0)


def test_every_offer_reads_back_as_itself_or_the_next_lower_step_of_the_table():
    for tenth in range(60, 1001):
        amps = tenth / 10
        back = pilot.amps_for_duty(pilot.duty_pct(amps))
        if 51 < amps <= 52.5:
            assert back == pytest.approx(51.0), amps
        else:
            assert back == pytest.approx(min(amps, 80.0)), amps


# --- high level -> state ------------------------------------------------------------------

@pytest.mark.parametrize("high_dv,state", [
    (120, "A"), (105, "A"), (104, "B"), (90, "B"), (75, "B"), (74, "C"), (60, "C"),
    (45, "C"), (44, "D"), (30, "D"), (15, "D"), (14, "E"), (0, "E"), (-60, "E"),
    (-61, "F"), (-120, "F"), (200, "A"), (-500, "F"),
])
def test_a_high_level_is_the_state_whose_nominal_level_is_nearest(high_dv, state):
    assert pilot.classify(high_dv) == state


@pytest.mark.parametrize("previous,high_dv,state", [
    ("A", 101, "A"), ("A", 100, "B"),      # A holds down to 10.1 V
    ("B", 108, "B"), ("B", 109, "A"),      # B holds up to 10.8 V
    ("B", 71, "B"), ("B", 70, "C"),        # ... and down to 7.1 V
    ("C", 78, "C"), ("C", 79, "B"),
    ("C", 41, "C"), ("C", 40, "D"),
    ("D", 48, "D"), ("D", 49, "C"),
    ("D", 11, "D"), ("D", 10, "E"),
    ("E", 18, "E"), ("E", 19, "D"),
    ("E", -64, "E"), ("E", -65, "F"),
    ("F", -57, "F"), ("F", -56, "E"),
])
def test_the_current_state_holds_0_4_volts_past_its_edges(previous, high_dv, state):
    assert pilot.classify(high_dv, previous) == state


def test_far_from_an_edge_hysteresis_changes_nothing():
    for previous in "ABCDEF":
        for high_dv, state in ((120, "A"), (90, "B"), (60, "C"), (30, "D"), (0, "E"), (-120, "F")):
            assert pilot.classify(high_dv, previous) == state, (previous, high_dv)


# --- the Classifier's debounce and diode check --------------------------------------------

A, B, C = 120, 90, 60  # high levels (V x 10)
LOW_OK = -120          # the EV's diode passes the PWM's -12 V
LOW_NO_DIODE = -20     # without the diode the low level stays high


def test_a_new_state_is_taken_after_two_equal_readings():
    c = pilot.Classifier()
    assert c.state == "A"
    assert c.feed(B, LOW_OK, True) == "A"
    assert c.feed(B, LOW_OK, True) == "B"
    assert c.feed(C, LOW_OK, True) == "B"
    assert c.feed(C, LOW_OK, True) == "C"
    assert (c.high_dv, c.low_dv) == (C, LOW_OK)


def test_a_single_glitch_or_alternating_readings_never_change_the_state():
    c = pilot.Classifier()
    for _ in range(20):
        assert c.feed(B, LOW_OK, False) == "A"
        assert c.feed(A, LOW_OK, False) == "A"
    c = pilot.Classifier()
    c.feed(B, LOW_OK, True)
    c.feed(B, LOW_OK, True)
    for level in (C, B, C, B, 30, B):  # glitches, each followed by the stable level
        assert c.feed(level, LOW_OK, True) == "B"


@pytest.mark.parametrize("debounce", [1, 3, 5])
def test_the_debounce_count_is_configurable(debounce):
    c = pilot.Classifier(debounce=debounce)
    states = [c.feed(C, LOW_OK, True) for _ in range(debounce + 1)]
    assert states == ["A"] * (debounce - 1) + ["C", "C"]


def test_a_missing_diode_is_seen_after_three_plugged_readings_without_the_low_level():
    c = pilot.Classifier()
    for _ in range(2):
        c.feed(B, LOW_NO_DIODE, True)
    assert c.state == "B" and c.diode_bad == 1 and not c.diode_missing()
    c.feed(B, LOW_NO_DIODE, True)
    assert not c.diode_missing()
    c.feed(B, LOW_NO_DIODE, True)
    assert c.diode_missing()
    c.feed(B, LOW_OK, True)  # the low level is back: the diode is there
    assert c.diode_bad == 0 and not c.diode_missing()


def test_the_diode_is_judged_only_while_the_pwm_runs_and_a_car_is_plugged():
    c = pilot.Classifier()
    for _ in range(10):
        c.feed(A, LOW_NO_DIODE, True)  # state A: no car, nothing to judge
    assert c.diode_bad == 0
    for _ in range(10):
        c.feed(B, 90, False)  # steady +12 V (no PWM): the low level is the high one
    assert c.diode_bad == 0 and not c.diode_missing()
    c.feed(B, LOW_NO_DIODE, True)
    c.feed(B, LOW_NO_DIODE, True)
    c.feed(B, 90, False)  # the PWM paused: the count neither grows nor resets
    assert c.diode_bad == 2
    c.feed(B, LOW_NO_DIODE, True)
    assert c.diode_missing()
    c.feed(A, LOW_NO_DIODE, True)
    c.feed(A, LOW_NO_DIODE, True)  # unplugged (debounced): forgotten
    assert c.diode_bad == 0


def test_the_diode_threshold_is_minus_10_volts():
    c = pilot.Classifier()
    c.feed(B, -100, True)
    c.feed(B, -100, True)
    assert c.diode_bad == 0  # -10.0 V reaches the threshold
    c.feed(B, -99, True)
    assert c.diode_bad == 1


# --- the PWM and the ADC ------------------------------------------------------------------

class FakePWM:
    def __init__(self, pin):
        self.pin = pin
        self.writes = []
        self.hz = None

    def freq(self, hz):
        self.hz = hz

    def duty_u16(self, value):
        self.writes.append(value)


class FakeADC:
    def __init__(self, pin):
        self.pin = pin
        self.values = [32768]
        self.reads = 0

    def read_u16(self):
        value = self.values[self.reads % len(self.values)]
        self.reads += 1
        self.clock.advance_us(10)  # a read takes 10 us
        return value


class FakeMachine:
    def __init__(self, clock):
        self.clock = clock

    def Pin(self, number, *args, **kwargs):  # noqa: N802 - machine's API
        return number

    def PWM(self, pin):  # noqa: N802
        return FakePWM(pin)

    def ADC(self, pin):  # noqa: N802
        adc = FakeADC(pin)
        adc.clock = self.clock
        return adc


PINS = {"pilot_pwm": 16, "pilot_adc": 26}
CALIBRATION = {"pilot_bias_v": 1.65, "pilot_v_per_adc_v": 8.0}


@pytest.fixture
def board(monkeypatch):
    clock = FakeTicks()
    monkeypatch.setattr(pilot, "time", clock)
    p = pilot.Pilot(FakeMachine(clock), PINS, CALIBRATION)
    return p, clock


def raw_of(pilot_volts):
    """The ADC's u16 for a pilot level: 1.65 V bias plus 1/8 of the pilot voltage."""
    return round((1.65 + pilot_volts / 8) / 3.3 * 65535)


def test_a_new_pilot_holds_a_steady_plus_12_volts_at_1_khz(board):
    p, _ = board
    assert p.pwm.hz == 1000
    assert p.pwm.writes == [65535] and not p.pwm_on() and p.offered == 0.0


def test_offer_writes_the_duty_rounded_down_and_reports_what_the_ev_reads(board):
    p, _ = board
    assert p.offer(16) == pytest.approx(16.0)
    assert p.pwm.writes[-1] == int(80 / 3 * 655.35) == 17476
    assert p.pwm_on()
    assert p.offer(51) == pytest.approx(51.0)
    assert p.pwm.writes[-1] == 55704  # 85 % is 55704.75: rounded up it would be 52.5 A
    assert p.offer(52) == pytest.approx(51.0)  # no duty for 52 A: 51 A offered
    assert p.offer(80) == pytest.approx(80.0)
    assert p.pwm.writes[-1] == int(96 * 655.35)


def test_no_offer_is_a_steady_plus_12_volts_and_an_unchanged_duty_is_not_rewritten(board):
    p, _ = board
    p.offer(16)
    p.offer(16)
    assert p.pwm.writes == [65535, 17476]
    for amps in (0, None, 5):
        assert p.offer(amps) == 0.0
        assert not p.pwm_on()
    assert p.pwm.writes == [65535, 17476, 65535]


def test_sample_reads_the_high_and_low_levels_in_tenths_of_a_volt(board):
    p, _ = board
    p.offer(16)
    p.adc.values = [raw_of(9.0)] * 7 + [raw_of(-12.0)] * 3
    high, low = p.sample()
    assert high == pytest.approx(90, abs=1) and low == pytest.approx(-120, abs=1)
    assert pilot.classify(high) == "B" and low <= pilot.DIODE_LOW_DV


def test_sample_of_a_steady_level_without_pwm_ends_after_one_window(board):
    p, clock = board
    p.adc.values = [raw_of(12.0)]
    start = clock.now_us
    high, low = p.sample(1100)
    assert high == low == pytest.approx(120, abs=1)
    assert clock.now_us - start < 1200


def test_sample_of_one_level_while_the_pwm_runs_reads_a_second_window(board):
    p, clock = board
    p.offer(16)
    p.adc.values = [raw_of(6.0)]  # the low phase fell between the reads, or a diode short
    start = clock.now_us
    high, low = p.sample(1100)
    assert high == low == pytest.approx(60, abs=1)
    assert 2 * 1100 <= clock.now_us - start < 3 * 1100


def test_a_read_held_longer_than_sixteen_windows_still_sees_both_levels(board):
    """A loaded host holds the thread 20 ms after the first reads, while the PWM runs: the
    time held off does not count against the 16-window cap, so the read goes on over a
    whole window after the pause and sees the low level too (ending on the high level
    alone read a false state F)."""
    p, clock = board
    p.offer(16)
    high_phase = [raw_of(6.0)] * 30
    p.adc.values = high_phase + [raw_of(6.0)] * 7 + [raw_of(-12.0)] * 3
    reads = p.adc.read_u16

    def held_once():
        value = reads()
        if p.adc.reads == 30:
            clock.advance_us(20000)  # the host ran something else for 20 ms
        return value
    p.adc.read_u16 = held_once
    high, low = p.sample(1100)
    assert high == pytest.approx(60, abs=1) and low == pytest.approx(-120, abs=1)
