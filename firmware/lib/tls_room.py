"""The board's TLS room: one TLS session at a time, in a hole of heap kept for it.

Why: mbedTLS (configured as MicroPython's rp2 port configures it) asks for a 16 KiB
receive buffer and a 4 KiB send buffer, each as one block, at every connection
(`mbedtls_ssl_setup`, from `wrap_socket`). Measured at a Pico W's heap (docs/firmware.md,
"Heap with every uplink on TLS"): a second session next to the resident wss one does not
fit the board (mqtts failed with ENOMEM at every attempt, about 35 KiB free), and taking
turns without a kept hole failed with ENOMEM after a while (the board's objects scatter
over the free heap between sessions: enough free in total, no hole large enough).
MicroPython's allocator is first fit from the lowest free block (py/gc.c, gc_alloc). So
the room holds two placeholder bytearrays, each exactly the size of one of mbedTLS's
buffers, taken first thing at boot, and gives them back immediately before a session's
`wrap_socket` (after a collection, nothing allocated in between): the buffers fit the
holes they leave (or a lower hole that fits just as well). When the session closes the
placeholders are taken again at once (after a collection): the holes its buffers leave
fit them, whatever the board allocated meanwhile.

    room = Room(log=log)          # takes the placeholders
    room.resident = point.link    # the wss link: step_aside(what) / come_back()
    await room.take(what)         # a transient session's turn; the wss link steps aside
    ctx = room.wrap(ssl_ctx)      # its wrap_socket frees the placeholders, then wraps
    ...                           # the session
    room.give()                   # placeholders back, wss link back, next one in

The resident session (OCPP over wss, ocpp_link.py) lives in the room too: it connects
holding `room.lock` with a wrapped context and calls `reserve()` as soon as it is closed.
Transient sessions: mqtts telemetry batches (telemetry.py) and https transfers
(ocpp_link.hold_link / transfer_tls / transfer_done: firmware download, one session per
file, and diagnostics upload). On CPython (the host runtime of the tests)
`wrap` returns the context unchanged (asyncio there takes only a real SSLContext); the
lock, the turns and the placeholders work the same.
"""

import asyncio
import gc
import sys

MICROPYTHON = sys.implementation.name == "micropython"
# The two blocks mbedTLS allocates per session with the rp2 configuration, each exactly as
# many 16-byte GC blocks as the buffer: the 16 KiB receive buffer and the 4 KiB send
# buffer (content + record overhead + m_tracked_calloc's header; measured on the 32-bit
# build: 1046 and 278 blocks). Same sizes both ways: the hole a placeholder leaves holds
# the buffer, and the hole a closed session's buffer leaves holds the placeholder again.
BUFFER_BYTES = (16736, 4448)


class Room:
    def __init__(self, sizes=BUFFER_BYTES, log=print):
        self.sizes = sizes
        self.log = log
        self.lock = asyncio.Lock()
        self.blocks = [None] * len(sizes)
        self.resident = None  # the OCPP link over wss: steps aside for a transient session
        self.sessions = 0  # TLS sessions opened in the room
        self.misses = 0  # times a placeholder could not be taken again (no such hole)
        self.reserve()

    def reserve(self):
        """Take the placeholders not held (call as soon as a session has closed); False
        if there is no hole for one of them now."""
        blocks = self.blocks
        if None not in blocks:
            return True
        gc.collect()
        for i in range(len(blocks)):
            if blocks[i] is None:
                try:
                    blocks[i] = bytearray(self.sizes[i])
                except MemoryError:
                    self.misses += 1
                    self.log("tls: no %d-byte hole for the TLS room (%d misses)" % (
                        self.sizes[i], self.misses))
                    return False
        return True

    def held(self):
        return None not in self.blocks

    def free(self):
        """Give the placeholders' memory to what is allocated next."""
        blocks = self.blocks
        for i in range(len(blocks)):
            blocks[i] = None
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
        return {"bytes": sum(self.sizes), "held": self.held(), "sessions": self.sessions,
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
