"""The hardware stand-ins behave like the Pico W's MicroPython modules and the world
behind them, on both runtimes (the world code is shared; the firmware-facing modules are
exercised on MicroPython through small scripts)."""

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.harness import run_script
from tools.board import MICROPYTHON, ROOT


def run_on(runtime, script, timeout=30):
    return run_script(runtime, script, timeout, firmware=False)


RUNTIMES = ["cpython", "micropython"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_pilot_adc_shows_the_iec61851_levels_of_the_ev_state(runtime):
    out = run_on(runtime, """
import machine, simworld
w = simworld.current()
adc = machine.ADC(machine.Pin(26))
pwm = machine.PWM(machine.Pin(16), freq=1000, duty_u16=int(0.2667 * 65535))
def levels():
    # at least 400 reads over at least 5 PWM periods: a loaded host may hold this process
    # for a whole high phase, and the level follows the world's clock, as on a board
    hi, lo = 0, 65535  # no lists of floats: they fragment a small heap
    t0, n = simworld.ticks_us(), 0
    while n < 400 or simworld.ticks_diff(simworld.ticks_us(), t0) < 5000:
        v = adc.read_u16()
        hi, lo = max(hi, v), min(lo, v)
        n += 1
    return round((hi / 65535 * 3.3 - 1.65) * 8), round((lo / 65535 * 3.3 - 1.65) * 8)
print("A", levels())
w.ev_plugged = True
w.ev_ready = False
print("B", levels())
w.ev_ready = True
print("C", levels(), w.pilot_state())
w.ev_diode_ok = False
print("nodiode", levels())
""")
    assert "A (12, -12)" in out
    assert "B (9, -12)" in out
    assert "C (6, -12) C" in out
    assert "nodiode (6, -6)" in out


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ev_draws_the_offered_current_only_through_a_closed_relay(runtime):
    out = run_on(runtime, """
import machine, simworld, math
w = simworld.current(); w.ev_plugged = True; w.ev_demand_a = 32
relay = machine.Pin(18, machine.Pin.OUT, value=0)
machine.PWM(machine.Pin(16), freq=1000, duty_u16=int(16 / 0.6 / 100 * 65535))
print("open", w.current_rms())
relay.on()
print("closed", round(w.current_rms(), 1))
adc = machine.ADC(27)
import time
hi, lo, t0 = 0, 65535, time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 200:  # ten whole mains cycles of reads
    r = adc.read_u16()
    hi, lo = max(hi, r), min(lo, r)
print("peak", round((hi - lo) / 2 / 65535 * 3.3 * 30 / math.sqrt(2)))
# the waveform itself, at evenly spaced instants of the ADC's clock (a loaded host that
# spaces the reads unevenly cannot bias this): ten cycles, 100 us apart
acc = 0.0
for k in range(2000):
    v = (w.adc_volts(1, k * 100) - 1.65) * 30
    acc += v * v
print("rms", round(math.sqrt(acc / 2000), 1))
w.relay_welded = True; relay.off()
print("welded", round(w.current_rms(), 1))
""")
    assert "open 0.0" in out and "closed 16.0" in out and "welded 16.0" in out
    assert "peak 16" in out and "rms 16.0" in out, out


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_dht11_has_the_real_timing_previous_value_and_error_behaviour(runtime):
    out = run_on(runtime, """
import dht, machine, simworld, time
w = simworld.current(); w.dht_blocking_ms = 0; w.ambient_c = 20; w.humidity = 40
s = dht.DHT11(machine.Pin(15))
s.measure(); print("first", s.temperature())
w.ambient_c = 35
time.sleep_ms(1100); s.measure(); print("previous", s.temperature())
try:
    s.measure()
except OSError as e:
    print("too soon", e.args[0])
time.sleep_ms(1100); s.measure(); print("now", s.temperature())
w.dht_fault = "timeout"; time.sleep_ms(1100)
try:
    s.measure()
except OSError as e:
    print("timeout", e.args[0])
w.dht_fault = "checksum"; time.sleep_ms(1100)
try:
    s.measure()
except Exception as e:
    print("bad frame", e)
""")
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert 19 <= int(lines["first"]) <= 21
    assert 19 <= int(lines["previous"]) <= 21  # the DHT11 hands back the last conversion
    assert lines["too"] == "soon 110"
    assert 34 <= int(lines["now"]) <= 36
    assert lines["timeout"] == "110"
    assert lines["bad"] == "frame checksum error"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_wlan_reports_the_cyw43_link_status_codes(runtime):
    out = run_on(runtime, """
import network, simworld, time
w = simworld.current(); w.ap_ssid = "shop"; w.ap_password = "pw"; w.wifi_join_ms = 200
wl = network.WLAN(network.STA_IF)
print("idle", wl.status())
wl.active(True); wl.connect("shop", "pw"); print("joining", wl.status())
time.sleep_ms(300); print("up", wl.status(), wl.isconnected())
w.wifi_up = False; time.sleep_ms(10); print("cut", wl.status())
w.wifi_up = True; wl.connect("shop", "nope"); time.sleep_ms(300); print("badauth", wl.status())
wl.connect("elsewhere", "pw"); time.sleep_ms(300); print("nonet", wl.status())
""")
    assert "idle 0" in out and "joining 1" in out and "up 3 True" in out
    assert "cut -2" in out and "badauth -3" in out and "nonet -2" in out


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_watchdog_that_is_not_fed_resets_the_board(runtime):
    out = run_on(runtime, """
import machine, simworld, time
w = simworld.current()
w.reset_handler = lambda reason: print("reset by", reason)
wdt = machine.WDT(timeout=300)
for i in range(4):
    time.sleep_ms(100); wdt.feed()
print("fed ok")
time.sleep_ms(600)
""")
    assert out.index("fed ok") < out.index("reset by watchdog")


def test_board_runner_cli_serves_the_documented_control_interface(tmp_path):
    assert MICROPYTHON.exists()
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "config.json").write_text(json.dumps({"cp_id": "PICO-CLI", "intervals": {"sensors_s": 1}}))
    proc = subprocess.Popen([sys.executable, "-m", "tools.board", "--runtime", "micropython",
                             "--flash", str(flash), "--world", '{"dht_blocking_ms": 0}'],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("[board] control: 127.0.0.1:"), first
        port = int(first.split(":")[2].split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            stream = conn.makefile("rw")

            def call(**req):
                stream.write(json.dumps(req) + "\n")
                stream.flush()
                return json.loads(stream.readline())

            assert call(cmd="plug", demand_a=20)["ok"]
            state = call(cmd="state")["result"]
            assert state["world"]["ev"]["plugged"] is True
            assert state["world"]["ev"]["demand_a"] == 20.0
            assert state["world"]["pilot"]["state"] == "B"
            assert call(cmd="temperature", value=48)["result"] == 48.0
            bad = call(cmd="fly")
            assert bad["ok"] is False and "unknown command" in bad["error"]
            assert call(cmd="set", key="nonsense", value=1)["ok"] is False
            # a power cut reboots the board; the EV stays plugged in
            boots = call(cmd="power_cut")["result"]
            assert boots == 2
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                state = call(cmd="state")["result"]
                if state["world"]["ev"]["plugged"]:
                    break
            assert state["world"]["ev"]["plugged"] is True and state["world"]["ambient_c"] == 48.0
    finally:
        proc.terminate()
        proc.wait(10)
