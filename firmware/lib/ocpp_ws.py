"""WebSocket client (RFC 6455) on asyncio streams, for OCPP-J.

    ws = WebSocket(max_size=8192)
    await ws.connect(url, protocol="ocpp1.6", user=cp_id, password=key, ssl_ctx=None,
                     timeout=10)
    text = await ws.recv()     # next text message (str); None once the connection closed
    await ws.send(text)        # one text message (fragmented above `frag_size` bytes)
    await ws.ping()            # a ping; `ws.last_rx` (ticks_ms) moves on every frame
    await ws.close(1000)       # close handshake, then the TCP connection

- `ws://` and `wss://` (TLS; `httpc.ssl_context` is loaded only for wss); the server must agree the
  requested subprotocol or `connect` raises `WSError` (the connection is refused).
- HTTP Basic authorisation when `password` is given (OCPP security profiles 1 and 2).
- Client frames are masked with a fresh random key; server frames must not be masked.
- Fragmented messages are reassembled in one preallocated buffer of `max_size` bytes; a
  larger message is refused with close code 1009. Control frames may interleave; pings are
  answered with pongs; a close frame is answered and ends `recv`.
- Writes are serialised by a lock so frames from several tasks never interleave.
Nothing blocks the event loop: every read and write goes through asyncio streams.
"""

import asyncio
import binascii
import hashlib
import random
import struct
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT = 0
OP_TEXT = 1
OP_BIN = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10
# CPython's transports may keep a reference to a written buffer: copy the frame there.
COPY_WRITES = sys.implementation.name != "micropython"


MAX_LINE = 1024


class WSError(Exception):
    pass


def parse_url(url):
    """(secure, host, port, path) of a ws:// or wss:// URL."""
    if url.startswith("wss://"):
        secure, rest = True, url[6:]
    elif url.startswith("ws://"):
        secure, rest = False, url[5:]
    else:
        raise WSError("not a ws:// or wss:// URL")
    slash = rest.find("/")
    netloc, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    port = 443 if secure else 80
    if ":" in netloc:
        netloc, p = netloc.rsplit(":", 1)
        port = int(p)
    return secure, netloc, port, path


def basic_auth(user, password):
    return "Basic " + binascii.b2a_base64(("%s:%s" % (user, password)).encode()).decode().strip()


async def _line(reader):
    line = await reader.readline()
    if len(line) > MAX_LINE:
        raise WSError("header line too long")
    return line


def _sha1(data):
    """SHA-1 digest: hashlib's when the port has it, else a small pure-Python one (used
    once per connection, to check Sec-WebSocket-Accept)."""
    if hasattr(hashlib, "sha1"):
        return hashlib.sha1(data).digest()
    m = 0xFFFFFFFF
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
    ml = len(data) * 8
    data = bytes(data) + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack(">Q", ml)
    for off in range(0, len(data), 64):
        w = list(struct.unpack(">16I", data[off:off + 64]))
        for i in range(16, 80):
            x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
            w.append(((x << 1) | (x >> 31)) & m)
        a, b, c, d, e = h
        for i in range(80):
            if i < 20:
                f = (b & c) | (~b & d)
                k = 0x5A827999
            elif i < 40:
                f = b ^ c ^ d
                k = 0x6ED9EBA1
            elif i < 60:
                f = (b & c) | (b & d) | (c & d)
                k = 0x8F1BBCDC
            else:
                f = b ^ c ^ d
                k = 0xCA62C1D6
            t = ((((a << 5) | (a >> 27)) & m) + (f & m) + e + k + w[i]) & m
            e = d
            d = c
            c = ((b << 30) | (b >> 2)) & m
            b = a
            a = t
        h = [(h[0] + a) & m, (h[1] + b) & m, (h[2] + c) & m, (h[3] + d) & m, (h[4] + e) & m]
    return struct.pack(">5I", h[0], h[1], h[2], h[3], h[4])


def accept_key(key):
    return binascii.b2a_base64(_sha1(key + GUID)).strip()


def _rand_bytes(n):
    out = bytearray(n)
    for i in range(n):
        out[i] = random.getrandbits(8)
    return out


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
        self.close_code = None
        self.last_rx = time.ticks_ms()
        self.protocol = None

    # -- connection ------------------------------------------------------------------
    async def connect(self, url, protocol="ocpp1.6", user=None, password=None, ssl_ctx=None,
                      timeout=10):
        await asyncio.wait_for(self._connect(url, protocol, user, password, ssl_ctx), timeout)

    async def _connect(self, url, protocol, user, password, ssl_ctx):
        secure, host, port, path = parse_url(url)
        if secure:
            if ssl_ctx is None:
                import httpc
                ssl_ctx = httpc.ssl_context()
            self.reader, self.writer = await asyncio.open_connection(
                host, port, ssl=ssl_ctx, server_hostname=host)
        else:
            self.reader, self.writer = await asyncio.open_connection(host, port)
        try:
            key = binascii.b2a_base64(_rand_bytes(16)).strip()
            default = 443 if secure else 80
            req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Protocol: %s\r\n") % (
                path, host if port == default else "%s:%d" % (host, port), key.decode(), protocol)
            if password is not None:
                req += "Authorization: %s\r\n" % basic_auth(user, password)
            self.writer.write((req + "\r\n").encode())
            await self.writer.drain()
            status = await _line(self.reader)
            parts = status.decode().split(" ", 2)
            if len(parts) < 2 or parts[1] != "101":
                raise WSError("handshake refused: %s" % status.decode().strip())
            headers = {}
            while True:
                line = await _line(self.reader)
                if not line:
                    raise WSError("connection closed during the handshake")
                if line in (b"\r\n", b"\n"):
                    break
                text = line.decode()
                if ":" in text and len(headers) < 24:
                    name, value = text.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            if headers.get("upgrade", "").lower() != "websocket":
                raise WSError("the server did not upgrade to websocket")
            if headers.get("sec-websocket-accept", "").encode() != accept_key(key):
                raise WSError("bad Sec-WebSocket-Accept")
            agreed = headers.get("sec-websocket-protocol")
            if agreed != protocol:
                raise WSError("the server did not agree subprotocol %s (got %s)" % (protocol, agreed))
            self.protocol = agreed
        except BaseException:
            await self.abort()
            raise
        self.open = True
        self.close_code = None
        self.last_rx = time.ticks_ms()

    async def abort(self):
        """Drop the TCP connection without a close handshake."""
        self.open = False
        w = self.writer
        self.writer = None
        if w is not None:
            try:
                w.close()
                await w.wait_closed()
            except Exception:
                pass

    async def close(self, code=1000, wait_s=2):
        """Close handshake: send a close frame, wait for the server's, drop the TCP link."""
        if self.open:
            try:
                await self._send_frame(OP_CLOSE, struct.pack(">H", code))
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
            await self._send_frame(OP_CLOSE, struct.pack(">H", code))
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
                if b1 & 0x80:  # a server must not mask
                    await self._fail(1002)
                    return None
                if n == 126:
                    await self._read_into(hdr, 2)
                    n = (self.hdr[0] << 8) | self.hdr[1]
                elif n == 127:
                    await self._read_into(hdr, 8)
                    n = struct.unpack(">Q", self.hdr)[0]
                self.last_rx = time.ticks_ms()
                if op >= 8:
                    if n > 125 or not fin:
                        await self._fail(1002)
                        return None
                    cmv = memoryview(self.cbuf)
                    await self._read_into(cmv, n)
                    if op == OP_PING:
                        await self._send_frame(OP_PONG, cmv[:n])
                    elif op == OP_CLOSE:
                        code = (self.cbuf[0] << 8 | self.cbuf[1]) if n >= 2 else 1005
                        self.close_code = code
                        try:
                            await self._send_frame(OP_CLOSE, struct.pack(">H", 1000 if code == 1005 else code))
                        except Exception:
                            pass
                        await self.abort()
                        return None
                    continue  # pong or unknown control frame
                if op == OP_CONT:
                    if msg_op is None:
                        await self._fail(1002)
                        return None
                elif op in (OP_TEXT, OP_BIN):
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
        if msg_op == OP_BIN:
            return bytes(rmv[:size])
        try:
            return str(rmv[:size], "utf-8")
        except Exception:
            await self._fail(1007)
            return None

    # -- writing -------------------------------------------------------------------------
    async def _send_frame(self, op, payload, fin=True):
        async with self.lock:
            if self.writer is None:
                raise OSError(107, "not connected")
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
        if n <= step:
            await self._send_frame(OP_TEXT, mv)
            return
        off = 0
        while off < n:
            end = min(n, off + step)
            await self._send_frame(OP_TEXT if off == 0 else OP_CONT, mv[off:end], end == n)
            off = end

    async def ping(self, payload=b"pc"):
        await self._send_frame(OP_PING, payload)
