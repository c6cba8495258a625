"""Code paging, declared here and nowhere else: modules imported for one job and dropped
from `sys.modules` after it, so their bytecode leaves a Pico W's heap (the charge point's
feature code alone would be more than half of what is free next to a TLS session).

    paging.load("ocpp_wsopen")   # import; on MemoryError collect once and try again
    paging.drop("ocpp_wsopen")   # forget it: freed with the last reference
    features = paging.Features(cp)
    features.get("smart")        # the feature object, its module loaded on first use
    features.unload_idle()       # the control tick: drop what was not used for a while

What pages (and who drops it):
- the OCPP features (ocpp_core, ocpp_localauth, ocpp_reservation, ocpp_smart,
  ocpp_trigger, ocpp_firmware): `Features`, when idle and not pinned;
- the charge point's helpers (ocpp_check: the CALL dispatch, ocpp_info: the summary,
  ocpp_boot: registration, ocpp_messages: the payload builders): every control tick
  (`TRANSIENT`), ocpp_boot also by ocpp_link after registering;
- the connection code: the WebSocket handshake (ocpp_wsopen: ocpp_ws), the MQTT connect
  (mqtt_connect: mqtt_link), the guarded TCP/TLS connect they and httpc open every
  connection with (netopen: ocpp_ws, mqtt_link and httpc, each after its connect), what
  the uplinks share (uplink: ocpp_ws, mqtt_link and the tick; httpc keeps the functions
  it imported);
- firmware checks and uploads (firmware_trust, ed25519, ocpp_diagnostics: ocpp_firmware)
  and the console's helpers (diag: app and ev).
One module pages by itself: ed25519 drops the pure SHA-512 (sha512) after each hash, so
it stays usable without this module (tools, tests).

THE RULE: nothing holds a paged object across an `await`. Idle features are dropped
between two ticks of the control loop; an object kept across an await may be one that
was dropped and loaded again meanwhile, and would then act on state the new one no
longer shares (and keep a second copy of its module on the heap). So a coroutine asks
again after every await: `cp.feature(name)`, `paging.load(...)`. Two cases are not
holding in that sense: a paged module that keeps no state may run its own coroutine to
the end (ocpp_wsopen's handshake, ocpp_boot's registration, ocpp_check's dispatch,
mqtt_connect, netopen's connect, ocpp_diagnostics' upload: dropping it only forgets the
module, whose code stays until the coroutine returns), and a pinned feature's own work
(`Features.pinned`: charging profiles, a reservation, a firmware job), which is never
dropped meanwhile.
"""

import gc
import sys
import time

from micropython import const

_AUTH_IDLE_MS = const(1000)
# the charge point's helpers, dropped by every control tick
TRANSIENT = ("ocpp_check", "ocpp_info", "ocpp_boot", "ocpp_messages", "uplink")


def load(mod):
    """The module `mod`, imported now if it is not loaded (one retry after a collection:
    a fragmented heap often has room once the garbage is gone)."""
    try:
        return __import__(mod)
    except MemoryError:
        drop(mod)
        gc.collect()
        return __import__(mod)


def drop(mod):
    """Forget module `mod` (its code is freed once nothing refers to it any more)."""
    if mod in sys.modules:
        del sys.modules[mod]
        return True
    return False


def module_of(name):
    """The module of a feature; each defines `Feature` (built with the charge point)."""
    return "ocpp_" + {"auth": "localauth", "resv": "reservation", "fw": "firmware"}.get(name, name)


class Features:
    """The charge point's paged features: name -> [object, last used (ticks_ms)]. Only the
    features that hold live state stay loaded (`pinned`); others leave when idle."""

    def __init__(self, cp):
        self.cp = cp
        self.loaded = {}
        # does a feature's state file exist (asked every tick while its module is not
        # loaded; only the loaded module changes the file, so unload() forgets this)
        self.stored = {}

    def get(self, name):
        entry = self.loaded.get(name)
        if entry is None:
            self.unload_idle(0, name)
            entry = [load(module_of(name)).Feature(self.cp), 0]
            self.loaded[name] = entry
        entry[1] = time.ticks_ms()
        return entry[0]

    def peek(self, name):
        """The feature object if it is loaded, else None (nothing is loaded)."""
        entry = self.loaded.get(name)
        return None if entry is None else entry[0]

    def has_state(self, path):
        """Does a feature's state file exist (cached until a feature is unloaded)."""
        known = self.stored.get(path)
        if known is None:
            known = self.stored[path] = self.cp.flash.exists(path)
        return known

    def pinned(self, name):
        if name == "smart":
            return self.cp.flash.exists("ocpp/profiles.json")
        if name == "resv":
            return self.cp.flash.exists("ocpp/reservation.json")
        return name == "fw"  # released by ocpp_firmware's release()

    def unload_idle(self, idle_ms=60000, keep=None):
        """Drop feature code not used for `idle_ms` (0: every unpinned feature but `keep`)."""
        now = time.ticks_ms()
        dropped = False
        loaded = self.loaded
        for name in list(loaded):
            if name == keep or self.pinned(name):
                continue
            # local auth holds its list and cache while loaded (they live on flash): it
            # leaves after a second idle, the others after idle_ms
            if time.ticks_diff(now, loaded[name][1]) >= (
                    _AUTH_IDLE_MS if name == "auth" and idle_ms > _AUTH_IDLE_MS else idle_ms):
                self.unload(name, False)
                dropped = True
        for mod in TRANSIENT if idle_ms else ():
            dropped = drop(mod) or dropped
        if dropped or idle_ms == 0:
            gc.collect()

    def unload(self, name, collect=True):
        if name in self.loaded:
            del self.loaded[name]
            self.stored.clear()
            drop(module_of(name))
            if collect:
                gc.collect()
