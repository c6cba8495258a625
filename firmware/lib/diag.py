"""Diagnostics for the console and the REPL helpers, loaded only when asked for (the
running app does not keep this code on the heap): the uplinks line, the report dict,
the station snapshot and the self-test.
"""

import gc
import time


def _r(v):
    return "--" if v is None else "%.1f" % v


def uplinks_text(app):
    parts = []
    if app.wifi is None:
        parts.append("wifi off")
    else:
        parts.append("wifi " + ("up" if app.wifi.is_up() else "down"))
    parts.append("time from " + str(app.clock.source) if app.clock.synced else "time not synced")
    if app.mode == "ocpp":
        s = app.point.summary()
        parts.append("ocpp " + str(s.get("connection", s.get("state", "?"))))
    else:
        parts.append("ocpp off (local mode)")
    if app.telemetry is None:
        parts.append("mqtt off")
    else:
        t = app.telemetry
        parts.append("mqtt %s (%d sent, %d buffered)" % (
            "connected" if t.connected() else "down", t.published, len(t.buffer)))
    if app.thingspeak is None:
        parts.append("thingspeak off")
    else:
        ts = app.thingspeak
        parts.append("thingspeak %d updates, %d backlog" % (ts.updates, len(ts.backlog)))
    return ", ".join(parts)


def report(app):
    """The console's sensors line (dht_error when the DHT11's last read failed)."""
    st = app.station
    out = {}
    t = st.temperature_c()
    if t is not None and st.dht.consecutive_errors == 0:
        out["t"] = t
        out["rh"] = st.humidity()
    elif st.dht.last_error:
        out["dht_error"] = st.dht.last_error
    tm = st.mcu_temperature_c()
    if tm is not None:
        out["tmcu"] = round(tm, 1)
    for key, value in (("v", st.voltage_v()), ("a", st.current_a()), ("w", st.power_w())):
        if value is not None:
            out[key] = round(value, 1)
    out["wh"] = round(st.energy_wh(), 3)
    out["cp"] = st.pilot_state()
    out["st"] = app.status()
    out["lim"] = st.offered_a()
    out["relay"] = st.relay_closed()
    faults = st.faults()
    if faults:
        out["faults"] = [f[0] for f in faults]
    if hasattr(gc, "mem_free"):
        gc.collect()  # the live heap, not how much garbage waits for a collection
        out["heap"] = gc.mem_free()
    return out


def selftest(app):
    """PASS/FAIL per sensor, the contactor and the pilot; True if all pass."""
    st = app.station
    results = []

    def check(name, ok, text):
        results.append(ok)
        print("%s %-8s %s" % ("PASS" if ok else "FAIL", name, text))

    d = st.dht
    if d.due():
        d.poll()
    t = d.temperature()
    check("dht11", t is not None and 0 <= t <= 50 and d.humidity() is not None,
          "%s C %s %%RH (reads %d, timeouts %d, checksum errors %d)" % (
              t, d.humidity(), d.reads, d.timeouts, d.checksum_errors))
    tm = st.mcu.read()
    check("mcu", -10 <= tm <= 85, "%.1f C" % tm)
    m = st.meter
    ok = m.measure()
    check("meter", ok and 180 <= m.voltage_v <= 260,
          "%s V %s A (mains %s)" % (_r(m.voltage_v), _r(m.current_a), "seen" if ok else "not seen"))
    high, low = st.pilot.sample(2200)
    state = st.pilot_state()
    levels = {"A": 120, "B": 90, "C": 60, "D": 30}
    expect = levels.get(state)
    pilot_ok = expect is not None and abs(high - expect) <= 15
    if st.pilot.pwm_on():
        pilot_ok = pilot_ok and low <= -100
    check("pilot", pilot_ok, "state %s, high %.1f V, low %.1f V, %s" % (
        state, high / 10, low / 10,
        "PWM %.1f%% (%s A)" % (st.pilot.duty * 100 / 65535, _r(st.pilot.offered))
        if st.pilot.pwm_on() else "steady +12 V (no offer)"))
    if st.relay_closed():
        check("relay", not st.flags[0], "closed, %s A flowing" % _r(m.current_a))
    else:
        flowing = m.current_a or 0.0
        check("relay", flowing < st.opts["welded_a"] and not st.flags[0],
              "open, %.2f A through it%s" % (flowing, " (welded?)" if flowing >= st.opts["welded_a"] else ""))
    ticks = st.ticks
    time.sleep_ms(3 * st.opts["safety_ms"] + 20)
    check("safety", st.ticks > ticks, "timer every %d ms, %d ticks, max gap %d ms" % (
        st.opts["safety_ms"], st.ticks, st.max_tick_gap_ms))
    free = app.flash.free_bytes()
    check("flash", free < 0 or free > 16384, "%s bytes free, energy register %.3f Wh" % (
        free, st.energy_wh()))
    passed = 0
    for r in results:
        passed += 1 if r else 0
    print("selftest %d/%d passed" % (passed, len(results)))
    return passed == len(results)


def snapshot(station):
    """Everything `ev.status()` / `ev.sensors()` shows, plain values."""
    d = station.dht
    return {
        "pilot": station.classifier.state,
        "pilot_high_v": station.classifier.high_dv / 10,
        "pilot_low_v": station.classifier.low_dv / 10,
        "duty": station.pilot.duty,
        "offered_a": station.pilot.offered,
        "allowed": station._allowed,
        "limit_a": station._limit,
        "relay": station._relay,
        "open_reason": station.open_reason,
        "faults": station.faults(),
        "warnings": station.warnings(),
        "v": station.meter.voltage_v,
        "a": station.meter.current_a,
        "w": station.meter.power_w,
        "wh": station.register.wh,
        "wh_writes": station.register.writes,
        "t": d.temperature(),
        "rh": d.humidity(),
        "dht": d.state(),
        "dht_reads": d.reads,
        "dht_timeouts": d.timeouts,
        "dht_checksum": d.checksum_errors,
        "tmcu": station.mcu.value,
        "ticks": station.ticks,
        "max_tick_gap_ms": station.max_tick_gap_ms,
    }
