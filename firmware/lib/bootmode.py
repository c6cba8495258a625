"""Safe mode: boot without the application so the REPL stays free.

Two ways in: the safe-mode jumper (GP22 to GND at reset; the pin has a pull-up) or the
file flag `/safe_mode` (written by `ev.safe_mode()`; removed by `ev.safe_mode(False)`).
`main.py` asks `check()` before it starts the app.
"""

FLAG = "safe_mode"


def check(flash=None, machine=None, pin=None):
    """(True, reason) if the board must stay in safe mode, else (False, None)."""
    if flash is None:
        from storage import Flash

        flash = Flash("")
    if flash.exists(FLAG):
        return True, "flag file /" + FLAG
    if machine is None:
        try:
            import machine
        except ImportError:
            return False, None
    if pin is None:
        pin = 22
        try:
            import config

            cfg, _ = config.load(flash)
            pin = cfg["pins"].get("safe_mode", 22)
        except Exception:
            pass
    if pin is None:
        return False, None
    try:
        level = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP).value()
    except Exception:
        return False, None
    if level == 0:
        return True, "jumper on GP%s" % pin
    return False, None


def set_flag(on=True, flash=None):
    if flash is None:
        from storage import Flash

        flash = Flash("")
    if on:
        flash.write_text(FLAG, "safe mode requested from the REPL\n")
    else:
        flash.remove(FLAG)
