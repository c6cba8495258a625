"""WebSocket client (RFC 6455) on asyncio streams, for OCPP-J.

    ws = WebSocket(max_size=8192)
    await ws.connect(url, protocol="ocpp1.6", user=cp_id, password=key, ssl_ctx=None,
                     timeout=10)
    text = await ws.recv()     # next text message (str); None once the connection closed
    await ws.send(text)        # one text message (fragmented above `frag_size` bytes)
    await ws.ping()            # a ping; `ws.last_rx` (ticks_ms) moves on every frame
    await ws.close(1000)       # close handshake, then the TCP connection

- `ws://` and `wss://` (TLS; `httpc.ssl_context` is loaded only for wss; the handshake code
  is in ocpp_wsopen, loaded only while connecting); the server must agree the
  requested subprotocol or `connect` raises `WSError` (the connection is refused).
- HTTP Basic authorisation when `password` is given (OCPP security profiles 1 and 2).
- Client frames are masked with a fresh random key; server frames must not be masked.
- Fragmented messages are reassembled in one preallocated buffer of `max_size` bytes; a
  larger message is refused with close code 1009. Control frames may interleave; pings are
  answered with pongs; a close frame is answered (unless the client sent one first) and
  ends `recv`. A masked frame, RSV bits, a reserved opcode, a fragmented or long control
  frame, a broken fragment sequence or a malformed close body fail the connection with
  1002, text that is not UTF-8 with 1007 (RFC 6455 5.1-5.5, 7.4.1, 8.1).
- Writes are serialised by a lock held for a whole message, so the fragments of one
  message never interleave with another task's message (a pong waits for it).
Nothing blocks the event loop: every read and write goes through asyncio streams.
"""

import asyncio
import random
import struct
import sys
import time

import paging
from micropython import const

_OP_CONT = const(0)
_OP_TEXT = const(1)
_OP_BIN = const(2)
_OP_CLOSE = const(8)
_OP_PING = const(9)
_OP_PONG = const(10)
# CPython's transports may keep a reference to a written buffer: copy the frame there.
COPY_WRITES = sys.implementation.name != "micropython"


class WSError(Exception):
    pass


class WebSocket:
    def __init__(self, max_size=4096, frag_size=1024):
        self.max_size = max_size
        self.frag_size = frag_size
        self.rbuf = bytearray(max_size)
        self.wbuf = bytearray(frag_size + 14)
        self.cbuf = bytearray(125)  # control frame payloads
        self.hdr = bytearray(8)
        self.reader = None
        self.writer = None
        self.lock = asyncio.Lock()
        self.open = False
        self.close_sent = False
        self.close_code = None
        self.last_rx = time.ticks_ms()
        self.rx_frames = 0  # frames received on this connection (a CALL's liveness check)
        self.protocol = None

    # -- connection ------------------------------------------------------------------
    async def connect(self, url, protocol="ocpp1.6", user=None, password=None, ssl_ctx=None,
                      timeout=10, flash=None):
        """`ssl_ctx` (wss only): an SSL context, or the uplink's config section (`ca_file`
        on `flash`, `insecure`; see uplink.tls_context), or the flash path of a DER CA
        certificate. Without a CA (and not insecure) a wss:// URL is refused."""
        import ocpp_wsopen  # the handshake code, only while connecting

        try:
            await asyncio.wait_for(ocpp_wsopen.handshake(self, url, protocol, user, password, ssl_ctx,
                                                         flash), timeout)
        finally:
            paging.drop("ocpp_wsopen")
            paging.drop("netopen")
            paging.drop("uplink")

    async def abort(self):
        """Drop the TCP connection without a close handshake (unsent bytes are dropped:
        CPython's close() would wait for a peer that stopped reading)."""
        self.open = False
        w = self.writer
        self.writer = None
        if w is not None:
            try:
                t = getattr(w, "transport", None)  # CPython only
                if t is not None:
                    t.abort()
                else:
                    w.close()
                await w.wait_closed()
            except Exception:
                pass

    async def close(self, code=1000, wait_s=2):
        """Close handshake: send a close frame, wait for the server's, drop the TCP link."""
        if self.open:
            try:
                await self._send_frame(_OP_CLOSE, struct.pack(">H", code))
                await asyncio.wait_for(self._await_close(), wait_s)
            except Exception:
                pass
        await self.abort()

    async def _await_close(self):
        while self.open:
            if await self.recv() is None:
                return

    # -- reading -------------------------------------------------------------------------
    async def _read_into(self, mv, n):
        off = 0
        reader = self.reader
        if hasattr(reader, "readinto"):
            while off < n:
                k = await reader.readinto(mv[off:n])
                if k is None:
                    continue
                if k == 0:
                    raise EOFError
                off += k
        else:
            while off < n:
                data = await reader.read(n - off)
                if not data:
                    raise EOFError
                mv[off:off + len(data)] = data
                off += len(data)

    async def _fail(self, code):
        try:
            await self._send_frame(_OP_CLOSE, struct.pack(">H", code))
        except Exception:
            pass
        self.close_code = code
        await self.abort()

    async def recv(self):
        """The next text message (str), or None when the connection is closed."""
        if not self.open:
            return None
        hdr = memoryview(self.hdr)
        rmv = memoryview(self.rbuf)
        size = 0
        msg_op = None
        try:
            while True:
                await self._read_into(hdr, 2)
                b0 = self.hdr[0]
                b1 = self.hdr[1]
                fin = b0 & 0x80
                op = b0 & 0x0F
                n = b1 & 0x7F
                # a server must not mask; no extension is negotiated (RSV bits); reserved
                # control opcodes (11-15)
                if b1 & 0x80 or b0 & 0x70 or op > _OP_PONG:
                    await self._fail(1002)
                    return None
                if n == 126:
                    await self._read_into(hdr, 2)
                    n = (self.hdr[0] << 8) | self.hdr[1]
                elif n == 127:
                    await self._read_into(hdr, 8)
                    n = struct.unpack(">Q", self.hdr)[0]
                self.last_rx = time.ticks_ms()
                self.rx_frames += 1
                if op >= 8:
                    if n > 125 or not fin:
                        await self._fail(1002)
                        return None
                    cmv = memoryview(self.cbuf)
                    await self._read_into(cmv, n)
                    if op == _OP_PING:
                        await self._send_frame(_OP_PONG, cmv[:n])
                    elif op == _OP_CLOSE:
                        code = (self.cbuf[0] << 8 | self.cbuf[1]) if n >= 2 else 1005
                        if n == 1 or (n and not (1000 <= code <= 1003 or 1007 <= code <= 1014
                                                 or 3000 <= code <= 4999)):
                            await self._fail(1002)
                            return None
                        self.close_code = code
                        if not self.close_sent:  # answer it, unless this answers ours
                            try:
                                await self._send_frame(_OP_CLOSE, struct.pack(">H", 1000 if code == 1005 else code))
                            except Exception:
                                pass
                        await self.abort()
                        return None
                    continue  # a pong
                if op == _OP_CONT:
                    if msg_op is None:
                        await self._fail(1002)
                        return None
                elif op in (_OP_TEXT, _OP_BIN):
                    if msg_op is not None:
                        await self._fail(1002)
                        return None
                    msg_op = op
                else:
                    await self._fail(1002)
                    return None
                if size + n > self.max_size:
                    await self._fail(1009)
                    return None
                await self._read_into(rmv[size:], n)
                size += n
                if fin:
                    break
        except (EOFError, OSError):
            await self.abort()
            return None
        if msg_op == _OP_BIN:
            return bytes(rmv[:size])
        try:
            return str(rmv[:size], "utf-8")
        except Exception:
            await self._fail(1007)
            return None

    # -- writing -------------------------------------------------------------------------
    async def _send_frame(self, op, payload, fin=True):
        async with self.lock:
            await self._write_frame(op, payload, fin)

    async def _write_frame(self, op, payload, fin=True):
        """One frame; the caller holds `lock`."""
        if self.writer is None:
            raise OSError(107, "not connected")
        if op == _OP_CLOSE:
            self.close_sent = True
        n = len(payload)
        buf = self.wbuf
        buf[0] = (0x80 if fin else 0) | op
        if n < 126:
            buf[1] = 0x80 | n
            h = 2
        else:
            buf[1] = 0x80 | 126
            buf[2] = n >> 8
            buf[3] = n & 0xFF
            h = 4
        key = random.getrandbits(32)
        k0 = key >> 24
        k1 = (key >> 16) & 0xFF
        k2 = (key >> 8) & 0xFF
        k3 = key & 0xFF
        buf[h] = k0
        buf[h + 1] = k1
        buf[h + 2] = k2
        buf[h + 3] = k3
        h += 4
        mask = (k0, k1, k2, k3)
        for i in range(n):
            buf[h + i] = payload[i] ^ mask[i & 3]
        frame = memoryview(buf)[:h + n]
        self.writer.write(bytes(frame) if COPY_WRITES else frame)
        await self.writer.drain()

    async def send(self, text):
        """Send one text message; fragmented into frames of at most `frag_size` bytes."""
        data = text.encode() if isinstance(text, str) else text
        mv = memoryview(data)
        n = len(data)
        step = self.frag_size
        async with self.lock:  # the whole message: no other message between its fragments
            off = 0
            while True:
                end = min(n, off + step)
                await self._write_frame(_OP_TEXT if off == 0 else _OP_CONT, mv[off:end], end == n)
                off = end
                if off >= n:
                    break

    async def ping(self, payload=b"pc"):
        await self._send_frame(_OP_PING, payload)
