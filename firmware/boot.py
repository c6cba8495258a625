"""First file the board runs after a reset: keep it tiny so the REPL is always reachable.
Safe mode (a jumper on GP22 or the /safe_mode flag) is decided in main.py."""

import gc

gc.collect()
