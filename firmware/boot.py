"""First file the board runs after a reset: keep it tiny so the REPL is always reachable."""

import gc

gc.collect()
