"""REPL helpers for technicians: `import ev`, then

    ev.help()        this list, one line per helper
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

They find the running application as `__main__.app`. This module only forwards: the
code lives in `diag.py`, loaded for the call and dropped again (off the heap while the
board runs).
"""


# The helpers diag.py holds as ev_<name> (`report` is below). Names only, checked when
# typed: a mistyped helper is answered at once, and the REPL's tab completion (`ev.` TAB
# asks for every name the board knows) offers these and nothing else. Their one-line
# descriptions live in diag.ev_help (off the heap between calls).
_HELPERS = ("help", "status", "sensors", "config", "set", "log", "queue", "wifi", "selftest",
            "start", "stop", "clear", "reboot", "safe_mode", "app")


def __getattr__(name):
    """ev.<name>(...) runs diag.ev_<name>(...): diag is imported for the call and dropped
    again (one forwarder instead of a function per helper: a smaller resident module)."""
    if name not in _HELPERS:
        raise AttributeError("ev has no helper %r: ev.help() lists them" % name)

    def call(*args):
        import diag

        try:
            return getattr(diag, "ev_" + name)(*args)
        finally:
            import paging

            paging.drop("diag")

    return call


def report():
    print("report " + __getattr__("app")().report_line())
