"""The WebSocket opening handshake (RFC 6455 section 4) for ocpp_ws: TCP (or TLS) connect
(netopen's guarded connect: no socket left open by a failed or timed-out attempt), the
HTTP Upgrade request with the subprotocol and Basic auth, the server's answer checked
(101, Upgrade, Sec-WebSocket-Accept, the agreed subprotocol). Loaded by
`ocpp_ws.WebSocket.connect` for one connection attempt and dropped again: its code is
needed only while connecting."""

import binascii
import hashlib
import random
import struct
import time

import netopen
import ocpp_ws
import uplink

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


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


async def handshake(self, url, protocol, user, password, ssl_ctx, flash=None):
    scheme, host, port, path, _ = uplink.parse_url(url, ocpp_ws.WSError)
    secure = scheme == "wss"
    if not secure and scheme != "ws":
        raise ocpp_ws.WSError("not a ws:// or wss:// URL")
    if secure:
        if ssl_ctx is None or isinstance(ssl_ctx, (str, dict)):
            if isinstance(ssl_ctx, str):  # the flash path of a CA certificate
                ssl_ctx = {"ca_file": ssl_ctx}
            ssl_ctx = uplink.tls_context(ssl_ctx, flash)
    else:
        ssl_ctx = None
    self.reader, self.writer = await netopen.connect(host, port, ssl_ctx)
    try:
        key = binascii.b2a_base64(_rand_bytes(16)).strip()
        default = 443 if secure else 80
        req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: %s\r\n") % (
            path, host if port == default else "%s:%d" % (host, port), key.decode(), protocol)
        if password is not None:
            req += "Authorization: %s\r\n" % uplink.basic_auth(user, password)
        self.writer.write((req + "\r\n").encode())
        await self.writer.drain()
        status = await uplink.read_line(self.reader, ocpp_ws.WSError)
        parts = status.split(b" ", 2)
        if len(parts) < 2 or parts[1] != b"101":
            raise ocpp_ws.WSError("handshake refused: %r" % bytes(status[:80]).strip())
        headers = await uplink.read_headers(self.reader, ocpp_ws.WSError)
        if headers.get("upgrade", "").lower() != "websocket" or \
                "upgrade" not in headers.get("connection", "").lower():
            raise ocpp_ws.WSError("the server did not upgrade to websocket")
        if "sec-websocket-extensions" in headers:  # none was asked for (RFC 6455 4.1)
            raise ocpp_ws.WSError("the server chose an extension")
        if headers.get("sec-websocket-accept", "").encode() != accept_key(key):
            raise ocpp_ws.WSError("bad Sec-WebSocket-Accept")
        agreed = headers.get("sec-websocket-protocol")
        if agreed != protocol:
            raise ocpp_ws.WSError("the server did not agree subprotocol %s (got %s)" % (protocol, agreed))
        self.protocol = agreed
    except BaseException:
        await self.abort()
        raise
    self.open = True
    self.close_sent = False
    self.close_code = None
    self.last_rx = time.ticks_ms()
