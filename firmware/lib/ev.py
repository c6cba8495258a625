"""REPL helpers for technicians: `import ev`, then

    ev.status()      connector status, pilot, contactor, meter, faults, uplinks
    ev.sensors()     every sensor with its raw level and error counters
    ev.config()      the running configuration (secrets masked)
    ev.set(k, v)     change a config key in /config.json ("intervals.telemetry_s", 30)
    ev.log(n)        the last n lines of the log on flash
    ev.queue()       OCPP messages waiting to be sent
    ev.wifi()        Wi-Fi link, address, signal
    ev.selftest()    check every sensor, the contactor and the pilot: PASS/FAIL lines
    ev.start(tag)    authorise a session locally (as a card would)
    ev.stop()        stop the running session
    ev.report()      one machine-readable line: report {json}
    ev.clear()       forget latched faults (after a repair)
    ev.reboot()      clean reboot (contactor open, energy saved, MQTT offline)
    ev.safe_mode()   reboot into safe mode (app not started); ev.safe_mode(False) leaves it

They find the running application as `__main__.app`.
"""

import gc

import diag


def _app():
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


def status():
    """Connector status, pilot, contactor, meter, faults and uplinks."""
    app = _app()
    st = app.station
    s = diag.snapshot(st)
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
    print("uplinks  %s" % diag.uplinks_text(app))
    print("board    up %d s  heap free %s  safety ticks %d (max gap %d ms)" % (
        app.uptime_s(), gc.mem_free() if hasattr(gc, "mem_free") else "--", s["ticks"],
        s["max_tick_gap_ms"]))


def sensors():
    """Every sensor with its raw level and error counters."""
    st = _app().station
    s = diag.snapshot(st)
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


def config():
    """The running configuration, secrets masked."""
    cfg = _mask(_app().config)
    for key in sorted(cfg):
        print("%-11s %s" % (key, cfg[key]))


def set(key, value):
    """Write `key` (dotted: "intervals.telemetry_s") into /config.json; applies at reboot."""
    app = _app()
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


def log(n=20):
    """The last n lines of the log on flash."""
    for line in _app().log.tail(n):
        print(line)


def queue():
    """OCPP messages waiting to be sent."""
    pending = _app().point.pending()
    if not pending:
        print("queue    empty")
    for item in pending:
        print("queue    %s" % (item,))


def wifi():
    """Wi-Fi link, address and signal."""
    w = _app().wifi
    if w is None:
        print("wifi     not configured (no wifi section in config.json)")
        return
    s = w.summary()
    print("wifi     %s  status %d (%s)  ip %s  rssi %s dBm  joins %d  failures %d" % (
        s["ssid"], s["status"], s["text"], s["ip"], s["rssi"], s["joins"], s["failures"]))


def selftest():
    """Check each sensor, the contactor and the pilot; prints PASS/FAIL lines."""
    return diag.selftest(_app())


def start(id_tag="LOCAL"):
    """Authorise a session locally, as a card reader would."""
    ok = _app().point.local_start(id_tag)
    print("start    %s" % ("accepted" if ok is not False else "refused (a session runs)"))


def stop():
    """Stop the running session."""
    ok = _app().point.local_stop("Local")
    print("stop     %s" % ("done" if ok is not False else "no session"))


def report():
    """One machine-readable line: `report {json}` (what the console report shows)."""
    import json

    print("report " + json.dumps(diag.report(_app())))


def clear():
    """Forget latched faults (after a repair)."""
    _app().station.clear_faults()
    print("faults   cleared")


def reboot():
    """Clean reboot: contactor open, energy saved, MQTT offline, then reset."""
    _app().reboot("REPL")


def safe_mode(on=True):
    """Reboot into safe mode (the app does not start); safe_mode(False) leaves it."""
    import bootmode

    try:
        app = _app()
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
