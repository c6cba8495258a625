"""Boot decisions: safe mode, and the rollback of a firmware update that cannot start.

Safe mode boots without the application so the REPL stays free. Two ways in: the
safe-mode jumper (GP22 to GND at reset; the pin has a pull-up) or the file flag
`/safe_mode` (written by `ev.safe_mode()`; removed by `ev.safe_mode(False)`). `main.py`
asks `check()` before it starts the app.

Firmware updates (ocpp_firmware): `restore(flash, plan)` undoes an install from
`fw/backup/`. `crashed(exc)` is what main.py calls when the application raised: an update
on trial (or cut short while copying) is rolled back and the board reset, so a new
firmware that crashes at start-up never strands the board at the REPL.
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


def restore(flash, plan):
    """Undo an install: the backups renamed back, the files it added removed; the plan
    becomes "failed" (the old firmware reports InstallationFailed). Repeatable after a
    power cut: a file already restored has no backup any more."""
    new = plan.get("new") or ()
    for path in (plan.get("files") or []) + (plan.get("drop") or []):
        backup = "fw/backup/" + path
        if flash.exists(backup):
            flash.rename(backup, path)
        elif path in new:
            flash.remove(path)
    flash.write_json("fw/install.json", {"state": "failed", "version": plan.get("version")})


def crashed(exc, flash=None, machine=None):
    """The application raised `exc`. If a firmware update is on trial, roll it back and
    reset (never returns); otherwise return and let the exception reach the REPL."""
    if flash is None:
        from storage import Flash

        flash = Flash("")
    try:
        plan = flash.read_json("fw/install.json")
    except (OSError, ValueError):
        return
    if plan.get("state") not in ("trial", "copying"):
        return
    line = "firmware %s crashed at start-up (%r): rolling back\n" % (plan.get("version"), exc)
    print(line, end="")
    try:
        flash.append("log.txt", line.encode())
    except OSError:
        pass
    restore(flash, plan)
    if machine is None:
        import machine
    machine.reset()
