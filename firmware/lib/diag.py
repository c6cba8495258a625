"""Diagnostics for the console and the REPL helpers, loaded only when asked for (the
running app does not keep this code on the heap): the uplinks line, the report dict,
the station snapshot and the self-test.
"""

import gc
import time


def _r(v):
    return "--" if v is None else "%.1f" % v


def firmware_text(app):
    """The running version and what the board accepts as an update (firmware_trust.py)."""
    fw = app.config.get("firmware") or {}
    keys = fw.get("keys") or []
    text = "%s  updates: %d key(s) in config" % (getattr(app.point, "fw_version", "?"), len(keys))
    if app.flash.exists("fw/keys.json"):
        text += " + rotations in fw/keys.json"
    if fw.get("allow_unsigned") is True:
        return text + "  UNSIGNED BUNDLES ALLOWED (firmware.allow_unsigned)"
    if not keys and not app.flash.exists("fw/keys.json"):
        return text + "  (no key: every bundle is refused)"
    return text + "  (signed bundles only)"


def uplinks_text(app):
    parts = []
    if app.wifi is None:
        parts.append("wifi off")
    else:
        parts.append("wifi " + ("up" if app.wifi.is_up() else "down"))
    parts.append("time from " + str(app.clock.source) if app.clock.synced else "time not synced")
    if app.mode == "ocpp":
        s = app.point.summary()
        tls = s.get("tls")
        parts.append("ocpp " + str(s.get("connection", s.get("state", "?"))) + (
            "" if tls is None else " (wss, certificate %s)" % (
                "checked" if tls == "checked" else "NOT checked: insecure" if tls == "insecure"
                else "unchecked: no CA, refused")))
    else:
        parts.append("ocpp off (local mode)")
    if app.telemetry is None:
        parts.append("mqtt off")
    elif app.telemetry_via is not None:
        t = app.telemetry
        parts.append("telemetry via ocpp (%s; %d sent, %d buffered)" % (
            app.telemetry_via[1], t.published, len(t.buffer)))
    else:
        t = app.telemetry
        parts.append("mqtt %s (%d sent, %d buffered%s)" % (
            "connected" if t.connected() else "down", t.published, len(t.buffer),
            _security(t.link)))
    if app.thingspeak_refused:
        parts.append("thingspeak off (https next to wss does not fit this heap)")
    elif app.thingspeak is None:
        parts.append("thingspeak off")
    else:
        ts = app.thingspeak
        parts.append("thingspeak %d updates, %d backlog%s" % (
            ts.updates, len(ts.backlog), _security(ts.mqtt) if ts.mqtt is not None else ""))
    return ", ".join(parts)


def _security(link):
    """What the uplinks line says about a link's TLS (nothing for plain or checked TLS)."""
    sec = link.security()
    if sec == "tls-unchecked":
        return ", TLS certificate NOT checked (insecure)"
    if sec == "refused":
        return ", mqtts without a CA: refused"
    return ", TLS" if sec == "tls" else ""


def report(app):
    """The console's sensors line (dht_error when the DHT11's last read failed), without
    the heap (App.report_line measures it after dropping this module)."""
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
    if app.loop_gap_ms is not None:
        out["loop_gap_ms"] = app.loop_gap_ms
    faults = st.faults()
    if faults:
        out["faults"] = [f[0] for f in faults]
    return out  # the caller adds the heap once this module is off it (App.report_line)


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


# -- the REPL helpers (`ev.py` forwards ev.<name>(...) to ev_<name>) --------------------


def ev_help():
    """One line per helper (ev.py's _HELPERS names them; tests/test_ev_repl_helpers.py
    keeps the two and the ev_ functions here in step)."""
    for line in (
        "help()         this list",
        "status()       connector status, pilot, contactor, meter, faults, uplinks",
        "sensors()      every sensor with its raw level and error counters",
        "config()       the running configuration (secrets masked)",
        "set(k, v)      change a key in /config.json: ev.set(\"intervals.telemetry_s\", 30)",
        "log(n=20)      the last n lines of the log on flash",
        "queue()        OCPP messages waiting to be sent",
        "wifi()         Wi-Fi link, address, signal",
        "selftest()     check every sensor, the contactor and the pilot: PASS/FAIL lines",
        "start(tag)     authorise a session locally (as a card would)",
        "stop()         stop the running session",
        "report()       one machine-readable line: report {json}",
        "clear()        forget latched faults (after a repair)",
        "reboot()       clean reboot (contactor open, energy saved, MQTT offline)",
        "safe_mode()    reboot into safe mode (app not started); safe_mode(False) leaves it",
        "app()          the running application object (__main__.app)",
    ):
        print("ev." + line)


def ev_app():
    import __main__

    app = getattr(__main__, "app", None)
    if app is None:
        raise RuntimeError("the application is not running (safe mode?)")
    return app


def _fmt(v, unit="", digits=1):
    if v is None:
        return "--"
    if isinstance(v, float):
        if digits == 3:
            return "%.3f%s" % (v, unit)
        return "%.1f%s" % (v, unit)
    return "%s%s" % (v, unit)


def ev_status():
    """Connector status, pilot, contactor, meter, faults and uplinks."""
    app = ev_app()
    st = app.station
    s = snapshot(st)
    summary = app.point.summary()
    print("station  %s  status %s" % (app.config["cp_id"], app.status()))
    print("pilot    %s  high %s V  low %s V  offered %s A%s" % (
        s["pilot"], _fmt(s["pilot_high_v"]), _fmt(s["pilot_low_v"]), _fmt(s["offered_a"]),
        "  (limit %s A)" % _fmt(s["limit_a"]) if s["limit_a"] is not None else ""))
    print("relay    %s%s" % ("closed" if s["relay"] else "open",
                             "" if s["relay"] or not s["open_reason"] else "  (last opened: %s)" % s["open_reason"]))
    print("meter    %s V  %s A  %s W  register %s Wh" % (
        _fmt(s["v"]), _fmt(s["a"]), _fmt(s["w"]), _fmt(s["wh"], "", 3)))
    tx = summary.get("transaction")
    if not tx:
        print("session  none")
    else:
        print("session  " + "  ".join("%s %s" % (k, tx[k]) for k in sorted(tx)))
    faults = s["faults"]
    print("faults   %s" % ("none" if not faults else "; ".join("%s: %s" % f for f in faults)))
    if s["warnings"]:
        print("warnings %s" % "; ".join("%s: %s" % w for w in s["warnings"]))
    print("uplinks  %s" % uplinks_text(app))
    print("firmware %s" % firmware_text(app))
    print("board    up %d s  heap free %s  safety ticks %d (max gap %d ms)  loop gap max %s ms" % (
        app.uptime_s(), gc.mem_free() if hasattr(gc, "mem_free") else "--", s["ticks"],
        s["max_tick_gap_ms"], "--" if app.loop_gap_ms is None else app.loop_gap_ms))


def ev_sensors():
    """Every sensor with its raw level and error counters."""
    st = ev_app().station
    s = snapshot(st)
    d = st.dht
    print("dht11    %s C  %s %%RH  state %s  reads %d  timeouts %d  checksum errors %d%s" % (
        _fmt(s["t"]), _fmt(s["rh"]), s["dht"], s["dht_reads"], s["dht_timeouts"],
        s["dht_checksum"], "  last error: %s" % d.last_error if d.last_error else ""))
    print("mcu      %s C (ADC4)" % _fmt(s["tmcu"]))
    print("pilot    state %s  high %s V  low %s V  duty %d/65535" % (
        s["pilot"], _fmt(s["pilot_high_v"]), _fmt(s["pilot_low_v"]), s["duty"]))
    m = st.meter
    print("meter    %s V  %s A  %s W  ok %s  offsets %d/%d  retries %d" % (
        _fmt(s["v"]), _fmt(s["a"]), _fmt(s["w"]), m.ok, int(m.off_v), int(m.off_i), m.retries))
    print("energy   %s Wh  (flash writes %d)" % (_fmt(s["wh"], "", 3), s["wh_writes"]))


def _mask(obj):
    if isinstance(obj, dict):
        out = {}
        for k in obj:
            if k in ("password", "write_key", "key") and obj[k]:
                out[k] = "***"
            else:
                out[k] = _mask(obj[k])
        return out
    return obj


def ev_config():
    """The running configuration, secrets masked."""
    cfg = _mask(ev_app().config)
    for key in sorted(cfg):
        print("%-11s %s" % (key, cfg[key]))


def ev_set(key, value):
    """Write `key` (dotted: "intervals.telemetry_s") into /config.json; applies at reboot."""
    app = ev_app()
    try:
        raw = app.flash.read_json("config.json")
    except (OSError, ValueError):
        raw = {}
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    app.flash.write_json("config.json", raw)
    app.log("config: %s set; ev.reboot() applies it" % key)


def ev_log(n=20):
    """The last n lines of the log on flash."""
    for line in ev_app().log.tail(n):
        print(line)


def ev_queue():
    """OCPP messages waiting to be sent."""
    pending = ev_app().point.pending()
    if not pending:
        print("queue    empty")
    for item in pending:
        print("queue    %s" % (item,))


def ev_wifi():
    """Wi-Fi link, address and signal."""
    w = ev_app().wifi
    if w is None:
        print("wifi     not configured (no wifi section in config.json)")
        return
    s = w.summary()
    print("wifi     %s  status %d (%s)  ip %s  rssi %s dBm  joins %d  failures %d" % (
        s["ssid"], s["status"], s["text"], s["ip"], s["rssi"], s["joins"], s["failures"]))


def ev_selftest():
    """Check each sensor, the contactor and the pilot; prints PASS/FAIL lines."""
    return selftest(ev_app())


def ev_start(id_tag="LOCAL"):
    """Authorise a session locally, as a card reader would."""
    ok = ev_app().point.local_start(id_tag)
    print("start    %s" % ("accepted" if ok is not False else "refused (a session runs)"))


def ev_stop():
    """Stop the running session."""
    ok = ev_app().point.local_stop("Local")
    print("stop     %s" % ("done" if ok is not False else "no session"))


def ev_clear():
    """Forget latched faults (after a repair)."""
    ev_app().station.clear_faults()
    print("faults   cleared")


def ev_reboot():
    """Clean reboot: contactor open, energy saved, MQTT offline, then reset."""
    ev_app().reboot("REPL")


def ev_safe_mode(on=True):
    """Reboot into safe mode (the app does not start); safe_mode(False) leaves it."""
    import bootmode

    try:
        app = ev_app()
    except RuntimeError:  # already in safe mode: the flag lives on the flash root
        app = None
    bootmode.set_flag(on, app.flash if app is not None else None)
    if not on:
        print("safe mode off: the app starts at the next reset")
    elif app is not None:
        app.reboot("safe mode")
    else:
        import machine

        machine.reset()
