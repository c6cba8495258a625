"""Room for the board's transient TLS sessions: a contiguous block of heap kept free for
them, and one of them at a time.

Why: a Pico W's heap holds the resident OCPP session (wss://) and one more TLS session
next to the running board, but mbedTLS (configured as MicroPython's rp2 port configures
it) asks for its 16 KiB receive buffer and 4 KiB send buffer as single blocks at every
connection. Between sessions the board's Python objects scatter over the free heap, and
after a while no hole is large enough though the total is: ENOMEM (OSError 12).
MicroPython's allocator is first fit from the lowest free block (py/gc.c, gc_alloc), so
the room takes a placeholder bytearray of a session's buffers early at boot, low in an
unfragmented heap, and gives it back immediately before a transient session's
`wrap_socket` (after a collection, with no allocation in between): mbedTLS's
`mbedtls_ssl_setup` then callocs its buffers into that hole. When the session is over the
placeholder is taken again (after a collection), landing in the lowest hole that fits,
normally the one the buffers left.

    room = Room(size, log)        # takes the placeholder
    room.resident = point         # the wss link: step_aside() / come_back()
    await room.take()             # one transient session at a time, wss stepped aside
    ctx = room.wrap(ssl_ctx)      # its wrap_socket frees the placeholder, then wraps
    ...                           # the session
    room.give()                   # takes the placeholder again, wss back, next one in

Users: the mqtts telemetry batches (telemetry.py), ThingSpeak's https posts
(thingspeak.py) and an https firmware download or diagnostics upload
(ocpp_link.hold_link). On CPython (the host runtime of the tests) `wrap` returns the
context unchanged (asyncio there takes only a real SSLContext); the lock and the
placeholder work the same.
"""

import asyncio
import gc
import sys

MICROPYTHON = sys.implementation.name == "micropython"
# mbedTLS's buffers with the rp2 configuration (16 KiB in + 4 KiB out content, plus record
# overhead and m_tracked_calloc's header), rounded up to whole 16-byte GC blocks
SESSION_BYTES = 21 * 1024


class Room:
    def __init__(self, size=SESSION_BYTES, log=print):
        self.size = size
        self.log = log
        self.lock = asyncio.Lock()
        self.block = None
        self.resident = None  # the OCPP link over wss: steps aside for a transient session
        self.sessions = 0  # TLS sessions opened in the room
        self.misses = 0  # times the placeholder could not be taken again (no such hole)
        self.reserve()

    def reserve(self):
        """Take the placeholder if it is not held (call when a session has closed);
        False if no hole is that large now."""
        if self.block is None:
            gc.collect()
            try:
                self.block = bytearray(self.size)
            except MemoryError:
                self.misses += 1
                self.log("tls: no %d-byte hole for the TLS room (%d misses)" % (
                    self.size, self.misses))
                return False
        return True

    def held(self):
        return self.block is not None

    def free(self):
        """Give the placeholder's memory to what is allocated next."""
        self.block = None
        gc.collect()

    async def take(self, what="a TLS session of another uplink"):
        """A transient session's turn: one at a time, the resident session stepped aside."""
        await self.lock.acquire()
        if self.resident is not None:
            try:
                await self.resident.step_aside(what)
            except BaseException:
                self.lock.release()
                raise

    def give(self):
        """The transient session is over: placeholder back, the resident back, next in."""
        self.reserve()
        if self.resident is not None:
            self.resident.come_back()
        self.lock.release()

    def wrap(self, ctx, section=None, flash=None):
        """The context to connect with: on MicroPython one whose wrap_socket frees the
        placeholder first. `ctx` None: made from an uplink's config `section` at that
        moment (httpc.tls_context), before the placeholder goes; on CPython `section`
        itself is returned then (the connection code makes the context)."""
        if not MICROPYTHON:
            return ctx if ctx is not None else section
        return Wrapped(self, ctx, section, flash)

    def summary(self):
        return {"bytes": self.size, "held": self.held(), "sessions": self.sessions,
                "misses": self.misses}


class Wrapped:
    """An SSL context whose wrap_socket frees the room's placeholder first."""

    def __init__(self, room, ctx, section, flash):
        self.room = room
        self.ctx = ctx
        self.section = section
        self.flash = flash

    def wrap_socket(self, sock, *args, **kw):
        ctx = self.ctx
        if ctx is None:
            import httpc

            ctx = httpc.tls_context(self.section, self.flash)  # (raises without a CA)
        room = self.room
        room.sessions += 1
        room.free()
        return ctx.wrap_socket(sock, *args, **kw)
