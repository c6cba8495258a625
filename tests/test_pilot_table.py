"""The control pilot's current table, asserted against fixed values of IEC 61851-1 (Annex A,
"maximum current to be drawn by vehicle" as a function of the PWM duty cycle), never against
another copy of the same code:

- the firmware's EVSE side (`firmware/lib/pilot.py`: `duty_pct(amps)`, the duty it drives),
- the firmware's own reading of a duty (`amps_for_duty`, what it reports as offered),
- the simulated EV (`tools/stubs/simworld.py`: `offered_amps`, its own table of the standard),
- and the round trip: the duty_u16 the firmware's `Pilot.offer` writes to the PWM, read by
  the simulated EV, on CPython and on the MicroPython Unix port.

The bands, as EVSE testers apply the standard (Fluke FEV300 manual, "Calculations of max.
charging current on basis of duty cycle", https://www.easymanua.ls/fluke/fev300/manual?p=12;
Gossen Metrawatt M525B manual, "The following table is specified by IEC 61851",
https://manualshive.com/en/manual/gossen-metrawatt/m525b/2247291?page=12):

    duty < 3 %               no charging (0 %: state E/F)
    3 % <= duty <= 7 %       digital communication (5 %), no current is offered by the PWM
    7 % < duty < 8 %         error, no charging
    8 % <= duty < 10 %       6 A
    10 % <= duty <= 85 %     duty x 0.6 A
    85 % < duty <= 96 %      (duty - 64) x 2.5 A
    96 % < duty <= 97 %      80 A
    duty > 97 %              no charging (100 %: steady +12 V, states B1/C1/D1)
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.harness import run_script
from tools.board import FIRMWARE, STUBS


def load(name, path):
    spec = importlib.util.spec_from_file_location("_pilot_table_" + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pilot = load("pilot", FIRMWARE / "lib" / "pilot.py")
simworld = load("simworld", STUBS / "simworld.py")

# (duty %, amps the EV may draw): the standard's values, band edges on both sides
IEC_AMPS_AT_DUTY = [
    (0.0, 0.0), (2.9, 0.0), (3.0, 0.0), (5.0, 0.0), (7.0, 0.0), (7.5, 0.0), (7.99, 0.0),
    (8.0, 6.0), (9.0, 6.0), (9.99, 6.0),
    (10.0, 6.0), (16.0, 9.6), (25.0, 15.0), (50.0, 30.0), (80.0, 48.0), (85.0, 51.0),
    (85.2, 53.0), (86.0, 55.0), (90.0, 65.0), (95.0, 77.5), (96.0, 80.0),
    (96.5, 80.0), (97.0, 80.0),
    (97.01, 0.0), (98.0, 0.0), (100.0, 0.0),
]

# (amps asked for, duty % the EVSE drives): the standard's duty for each offer; 51..52.5 A
# has no duty of its own (85 % is 51 A, just above 85 % is 52.5 A): the offer must not be
# more than asked, so 85 %; above 80 A the most the table has, 96 %
IEC_DUTY_FOR_AMPS = [
    (0, 0.0), (5.9, 0.0),
    (6, 10.0), (10, 100 / 6), (16, 80 / 3), (20, 100 / 3), (32, 160 / 3), (40, 200 / 3),
    (51, 85.0), (52, 85.0), (52.5, 85.0),
    (53, 85.2), (60, 88.0), (70, 92.0), (80, 96.0), (100, 96.0),
]


@pytest.mark.parametrize("pct,amps", IEC_AMPS_AT_DUTY)
def test_firmware_reads_each_duty_as_iec_61851_offers_it(pct, amps):
    assert pilot.amps_for_duty(pct) == pytest.approx(amps, abs=1e-9), f"{pct} % duty"


@pytest.mark.parametrize("pct,amps", IEC_AMPS_AT_DUTY)
def test_simulated_ev_reads_each_duty_as_iec_61851_offers_it(pct, amps):
    assert simworld.offered_amps(pct / 100) == pytest.approx(amps, abs=1e-9), f"{pct} % duty"


@pytest.mark.parametrize("amps,pct", IEC_DUTY_FOR_AMPS)
def test_firmware_drives_the_iec_61851_duty_for_each_offer(amps, pct):
    assert pilot.duty_pct(amps) == pytest.approx(pct, abs=1e-9), f"{amps} A"


def test_no_offer_is_more_than_asked_and_the_offer_never_falls_as_the_ask_rises():
    asked = [6 + i / 10 for i in range(0, 741)]  # 6.0 .. 80.0 A
    offers = [pilot.amps_for_duty(pilot.duty_pct(a)) for a in asked]
    for a, got in zip(asked, offers):
        assert got <= a + 1e-9, f"{a} A asked, {got} A offered"
        assert got >= min(a, 80) - 1.5 - 1e-9, f"{a} A asked, only {got} A offered"
    assert offers == sorted(offers)


ROUND_TRIP = r"""
import json, machine, simworld
from pilot import Pilot
w = simworld.current()
p = Pilot(machine, {"pilot_pwm": 16, "pilot_adc": 26},
          {"pilot_bias_v": 1.65, "pilot_v_per_adc_v": 8.0})
out = []
for amps in %r:
    offered = p.offer(amps)
    out.append([amps, offered, simworld.offered_amps(w.pilot_duty()), p.pwm_on()])
print("ROUNDTRIP", json.dumps(out))
"""

# (amps asked for, amps the EV reads on the wire): the edge values of the table
ON_THE_WIRE = [(0, 0.0), (5, 0.0), (6, 6.0), (16, 16.0), (32, 32.0), (51, 51.0), (52, 51.0),
               (53, 53.0), (80, 80.0), (100, 80.0)]


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_the_duty_the_firmware_writes_is_read_by_the_ev_as_the_current_offered(runtime):
    script = ROUND_TRIP % ([a for a, _ in ON_THE_WIRE],)
    out = run_script(runtime, script, 60)
    (line,) = [x for x in out.splitlines() if x.startswith("ROUNDTRIP ")]
    wrong = []
    for (amps, expected), (_, offered, on_wire, pwm_on) in zip(ON_THE_WIRE, json.loads(line[10:])):
        # the EV reads what the firmware says it offers (the duty is a 16-bit number, rounded
        # down, so at most a hundredth of an ampere less), and that is the standard's value
        if (abs(offered - expected) > 1e-6 or not expected - 0.01 <= on_wire <= expected + 1e-9
                or pwm_on != (expected > 0)):
            wrong.append(f"{amps} A asked: firmware offers {offered} A, the EV reads {on_wire} A "
                         f"(IEC 61851-1: {expected} A), PWM {'on' if pwm_on else 'off'}")
    assert not wrong, "\n".join(wrong)
