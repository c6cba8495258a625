"""Board entry point: the rp2 port runs this after boot.py. In safe mode the app is not
started and the REPL stays free; otherwise `app` (the running App) is what `import ev`
finds. If the app raises while a firmware update is on trial, `bootmode.crashed` rolls the
update back and resets the board; any other crash ends at the REPL as before."""

import sys

import bootmode

safe, why = bootmode.check()
del sys.modules["bootmode"], bootmode  # not needed again: off the heap
if safe:
    print("safe mode (%s): application not started; REPL free. ev.safe_mode(False) and a reset leave it." % why)
else:
    import gc

    gc.collect()
    try:
        from app import App

        app = App()
        app.run()
    except Exception as exc:
        gc.collect()
        import bootmode

        bootmode.crashed(exc)
        raise
